//! The five job kinds as the frontend submits them (`CONTRACT.md` §2), with
//! image URLs on the one origin the bench allows the orchestrator
//! (`IMAGE_URL_ORIGINS`).

/// The origin of every image URL the bench sends.
pub const IMAGE_ORIGIN: &str = "https://cdn.example.test";

/// One kind: its public route and a request body the frontend would send.
#[derive(Debug)]
pub struct Kind {
    pub name: &'static str,
    pub route: &'static str,
    pub body: &'static str,
}

/// Every kind, in the orchestrator's table order. Face swap is the one the
/// frontend never calls; its body is the smallest valid one.
pub const KINDS: [Kind; 5] = [
    Kind {
        name: "camera-angle",
        route: "/api/v1/camera-angle/jobs",
        body: r#"{"image_url":"https://cdn.example.test/images/s/a.png","vertical":0,"horizontal":0,"zoom":0,"steps":8}"#,
    },
    Kind {
        name: "qwen-image-edit",
        route: "/api/v1/qwen-image-edit/jobs",
        body: r#"{"image_url":"https://cdn.example.test/images/s/a.png","prompt":"make it dusk","steps":4}"#,
    },
    Kind {
        name: "face-mask",
        route: "/api/v1/face-mask/tasks",
        body: r#"{"image_url":"https://cdn.example.test/images/s/a.png","face_index":0}"#,
    },
    Kind {
        name: "face-swap",
        route: "/api/v1/face-swap/tasks",
        body: r#"{"masked_image_url":"https://cdn.example.test/images/s/m.png","target_face_url":"https://cdn.example.test/images/s/f.png"}"#,
    },
    Kind {
        name: "full-face-swap",
        route: "/api/v1/full-face-swap/tasks",
        body: r#"{"source_image_url":"https://cdn.example.test/images/s/a.png","target_face_url":"https://cdn.example.test/images/s/f.png","model":"seedream","face_index":0,"size":"auto"}"#,
    },
];

/// The camera-angle job: what the single-kind benchmarks submit.
pub const CAMERA_ANGLE: &Kind = &KINDS[0];
