//! UTC calendar conversions, both ways: the `x-amz-date` of a signature and
//! the RFC 3339 `Expiration` of instance-profile credentials. Days-from-civil
//! arithmetic (Howard Hinnant's algorithms), so no date crate is needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYYMMDD'T'HHMMSS'Z'`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = stoke_api::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2026-11-25T12:34:56Z` (fractional seconds and a numeric offset accepted).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    // ASCII only: the byte slicing below then never splits a character.
    if !s.is_ascii()
        || s.len() < 20
        || &s[4..5] != "-"
        || &s[7..8] != "-"
        || !matches!(&s[10..11], "T" | "t")
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Skip fractional seconds; then Z or ±HH:MM.
    let rest = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let (oh, om) = (o[1..3].parse::<i64>().ok()?, o[4..6].parse::<i64>().ok()?);
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        // 2015-08-30T12:36:00Z, the date of AWS's SigV4 examples.
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00Z"), Some(t));
        assert_eq!(parse_rfc3339("2015-08-30T14:36:00.123+02:00"), Some(t));
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day and the turn of a century.
        let leap = parse_rfc3339("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(amz_date(leap), "20240229T235959Z");
        assert_eq!(
            amz_date(parse_rfc3339("2100-03-01T00:00:00Z").unwrap()),
            "21000301T000000Z"
        );
        for bad in [
            "",
            "2015-08-30",
            "2015-13-01T00:00:00Z",
            "2015-08-30T12:36:00",
            "x015-08-30T12:36:00Z",
            "2015-08-30T12:36:00Zé",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
