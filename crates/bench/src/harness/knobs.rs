//! The scenarios' settings: environment variables read once at the start,
//! blank meaning unset, each checked against its range so a typo stops the
//! run with the variable's name instead of running something else.

use std::{fmt::Display, ops::RangeInclusive, str::FromStr, time::Duration};

use super::BoxError;

fn raw(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A number within `range`, or `default` when unset.
pub fn number<T>(name: &str, default: T, range: RangeInclusive<T>) -> Result<T, BoxError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let Some(value) = raw(name) else {
        return Ok(default);
    };
    let parsed: T = value
        .parse()
        .map_err(|_| format!("{name}={value:?} is not a number"))?;
    if !range.contains(&parsed) {
        return Err(format!(
            "{name}={parsed} is outside {}..={}",
            range.start(),
            range.end()
        )
        .into());
    }
    Ok(parsed)
}

/// Whole seconds within `range`.
pub fn seconds(name: &str, default: u64, range: RangeInclusive<u64>) -> Result<Duration, BoxError> {
    number(name, default, range).map(Duration::from_secs)
}

/// `1` or `true` (anything else, or unset, is off).
pub fn flag(name: &str) -> bool {
    raw(name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// One of `allowed`, or `default` when unset.
pub fn choice(
    name: &str,
    default: &'static str,
    allowed: &[&'static str],
) -> Result<&'static str, BoxError> {
    let Some(value) = raw(name) else {
        return Ok(default);
    };
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(&value))
        .ok_or_else(|| format!("{name}={value:?} must be one of {}", allowed.join(", ")).into())
}

/// Comma-separated, strictly increasing counts within `range`; `default`
/// when unset, and empty when set to a lone `,` or `none`.
pub fn increasing_counts(
    name: &str,
    default: &str,
    range: RangeInclusive<usize>,
) -> Result<Vec<usize>, BoxError> {
    let value = match std::env::var(name) {
        Ok(v) => v,
        Err(_) => default.to_owned(),
    };
    let mut counts: Vec<usize> = Vec::new();
    for part in value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "none")
    {
        let n: usize = part
            .parse()
            .map_err(|_| format!("{name}: {part:?} is not a number"))?;
        if !range.contains(&n) || counts.last().is_some_and(|&last| n <= last) {
            return Err(format!(
                "{name} must be increasing counts within {}..={}",
                range.start(),
                range.end()
            )
            .into());
        }
        counts.push(n);
    }
    Ok(counts)
}
