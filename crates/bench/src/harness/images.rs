//! Upload bodies: a small, fully valid PNG, and a large "PNG" (a real
//! signature and header, then filler) generated as a stream, so neither
//! side holds it in memory.

use bytes::Bytes;
use reqwest::{Body, multipart::Part};

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
const BIG_CHUNK: usize = 256 * 1024;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// IHDR of an 8-bit RGBA image.
fn ihdr(width: u32, height: u32) -> [u8; 13] {
    let mut data = [0u8; 13];
    data[..4].copy_from_slice(&width.to_be_bytes());
    data[4..8].copy_from_slice(&height.to_be_bytes());
    data[8] = 8;
    data[9] = 6;
    data
}

/// A `side`×`side` RGBA PNG with its pixels stored uncompressed (zlib
/// "stored" blocks): about `side² × 4` bytes, and it decodes anywhere.
pub fn small_png(side: u32) -> Bytes {
    let mut raw = Vec::new();
    for y in 0..side {
        raw.push(0); // filter: none
        for x in 0..side {
            raw.extend_from_slice(&[(x * 4) as u8, (y * 4) as u8, ((x ^ y) * 4) as u8, 255]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    while let Some(block) = blocks.next() {
        zlib.push(u8::from(blocks.peek().is_none())); // BFINAL, BTYPE=00
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = PNG_SIGNATURE.to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr(side, side));
    png_chunk(&mut png, b"IDAT", &zlib);
    png_chunk(&mut png, b"IEND", &[]);
    Bytes::from(png)
}

/// The multipart file part of a PNG held in memory.
pub fn png_part(png: &Bytes) -> Part {
    Part::stream_with_length(Body::from(png.clone()), png.len() as u64)
        .file_name("bench.png")
        .mime_str("image/png")
        .expect("a static MIME type parses")
}

/// A `total`-byte PNG part generated as it is sent: signature and IHDR,
/// then filler chunks sharing one buffer.
pub fn big_png_part(total: u64) -> Part {
    let mut head = PNG_SIGNATURE.to_vec();
    png_chunk(&mut head, b"IHDR", &ihdr(8192, 8192));
    let head = Bytes::from(head);
    let filler = Bytes::from(vec![0xA5u8; BIG_CHUNK]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = if sent >= total {
            None
        } else if sent == 0 {
            Some(head.slice(..head.len().min(usize::try_from(total).unwrap_or(usize::MAX))))
        } else {
            let left = usize::try_from(total - sent).unwrap_or(usize::MAX);
            Some(filler.slice(..left.min(BIG_CHUNK)))
        };
        std::future::ready(chunk.map(|c| {
            let next = sent + c.len() as u64;
            (Ok::<_, std::io::Error>(c), next)
        }))
    });
    Part::stream_with_length(Body::wrap_stream(stream), total)
        .file_name("big.png")
        .mime_str("image/png")
        .expect("a static MIME type parses")
}
