//! Durations as flags and config files take them.

use std::time::Duration;

/// Parses a duration as command-line flags and config files take it: humantime with a unit
/// (`250ms`, `30s`, `1m 30s`), or `0`. A bare number is refused, naming the units it could have
/// meant: `--ttl 30` read as milliseconds once gave a 30 ms lease.
pub(crate) fn parse_duration_with_unit(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bare_number = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare_number && text != "0" {
        return Err(format!("a duration needs a unit, e.g. {text}s or {text}ms"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_durations_need_a_unit() {
        assert_eq!(
            parse_duration_with_unit("30"),
            Err("a duration needs a unit, e.g. 30s or 30ms".to_owned())
        );
        assert!(parse_duration_with_unit("2.5").is_err());
        assert_eq!(parse_duration_with_unit("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_with_unit("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_duration_with_unit("1m 30s"),
            Ok(Duration::from_secs(90))
        );
        assert!(parse_duration_with_unit("soon").is_err());
    }
}
