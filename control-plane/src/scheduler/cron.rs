//! Five-field cron expressions (`minute hour day-of-month month day-of-week`):
//! Alga's acceptance rules (docs/design/alga-compatibility.md, "Host APIs"),
//! the fields' values, and the next occurrence in an IANA time zone.
//!
//! Semantics are Vixie cron's: day-of-week 0–7 with 0 and 7 both Sunday;
//! `a/n` means `a-max/n`; when both day fields are restricted a day matching
//! either fires (Alga refuses such expressions, so this only matters for rows
//! written elsewhere). A local time that a DST change skips does not fire that
//! day; one that repeats fires at its first occurrence.

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// The longest expression Alga accepts.
pub(crate) const MAX_LEN: usize = 128;

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Vixie's DOM_STAR/DOW_STAR: whether the field starts with `*`.
    dom_star: bool,
    dow_star: bool,
}

/// Validates `raw` as Alga does, then reads its values. Returns the trimmed
/// expression (what is stored) or the message for `fieldErrors.cron`.
pub(crate) fn validate(raw: &str) -> Result<(String, Cron), &'static str> {
    let value = raw.trim();
    if value.encode_utf16().count() > MAX_LEN {
        return Err("Cron expression too long");
    }
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [min, hour, dom, mon, dow] = parts[..] else {
        return Err("Invalid cron expression (expected 5 fields: m h dom mon dow)");
    };
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, '*' | '/' | ',' | '-');
    if parts.iter().any(|p| !p.chars().all(allowed)) {
        return Err("Invalid cron expression (unsupported characters)");
    }
    if dom != "*" && dow != "*" {
        return Err("Cron cannot set both day-of-month and day-of-week");
    }
    // Alga's minimum-interval rule, exactly as it is: only these minute fields,
    // and only when every other field is `*`.
    let others_star = hour == "*" && dom == "*" && mon == "*" && dow == "*";
    if others_star && matches!(min, "*" | "*/1" | "*/2" | "*/3" | "*/4") {
        return Err("Cron too frequent (minimum interval is 5 minutes)");
    }
    let cron = Cron::parse_fields([min, hour, dom, mon, dow])
        .ok_or("Invalid cron expression (value out of range)")?;
    Ok((value.to_owned(), cron))
}

impl Cron {
    /// Reads an expression that passed [`validate`] (or any 5-field one).
    pub(crate) fn parse(expr: &str) -> Option<Cron> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = parts[..] else {
            return None;
        };
        Self::parse_fields([min, hour, dom, mon, dow])
    }

    fn parse_fields([min, hour, dom, mon, dow]: [&str; 5]) -> Option<Cron> {
        // Day-of-week 7 is Sunday, folded onto 0.
        let dow_bits = field(dow, 0, 7)?;
        Some(Cron {
            minutes: field(min, 0, 59)?,
            hours: u32::try_from(field(hour, 0, 23)?).ok()?,
            days_of_month: u32::try_from(field(dom, 1, 31)?).ok()?,
            months: u16::try_from(field(mon, 1, 12)?).ok()?,
            days_of_week: u8::try_from((dow_bits | (dow_bits >> 7)) & 0x7f).ok()?,
            dom_star: dom.starts_with('*'),
            dow_star: dow.starts_with('*'),
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` at which the expression fires in
    /// `tz`; `None` if it never does (e.g. `0 0 30 2 *`).
    pub(crate) fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).date_naive();
        // Eight years cover any day-of-month/month combination (29 February).
        for offset in 0..=(366 * 8) {
            let date = start.checked_add_days(Days::new(offset))?;
            if !self.day_matches(date) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                    let Some(local) = date.and_hms_opt(hour, minute, 0) else {
                        continue;
                    };
                    let at = match tz.from_local_datetime(&local) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                        LocalResult::None => continue,
                    };
                    let at = at.with_timezone(&Utc);
                    if at > after {
                        return Some(at);
                    }
                }
            }
        }
        None
    }
}

/// One field's bit set: a comma list of `*`, `n`, `a-b`, each with an optional `/step`.
fn field(text: &str, min: u32, max: u32) -> Option<u64> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(number(step)?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let a = number(range)?;
            // `a/n` runs from a to the end of the range.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1);
        if lo < min || hi > max || lo > hi || step == 0 {
            return None;
        }
        for v in (lo..=hi).step_by(usize::try_from(step).ok()?) {
            bits |= 1 << v;
        }
    }
    Some(bits)
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A convenience for tests and callers holding a stored row.
pub(crate) fn next_run(cron: &str, timezone: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = super::validate::parse_timezone(timezone)?;
    Cron::parse(cron)?.next_after(tz, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(stored)` or `Err(message)`, through [`validate`].
    fn check(raw: &str, expected: Result<&str, &str>) {
        let got = validate(raw).map(|(stored, _)| stored);
        assert_eq!(
            got.as_deref(),
            expected.map(str::to_owned).as_deref(),
            "{raw:?}"
        );
    }

    #[test]
    fn expressions_are_accepted_as_alga_accepts_them() {
        check("*/5 * * * *", Ok("*/5 * * * *"));
        check("  0 9 * * 1-5 ", Ok("0 9 * * 1-5"));
        check("0,30 8-18/2 * 1,6 *", Ok("0,30 8-18/2 * 1,6 *"));
        check("0 0 1 * *", Ok("0 0 1 * *"));
        check("0 0 * * 7", Ok("0 0 * * 7"));
        // Alga's rule only looks at these literal minute fields.
        check("0-59 * * * *", Ok("0-59 * * * *"));
        check("*/4 1 * * *", Ok("*/4 1 * * *"));

        check(
            &format!("0 0 * * {}", "1,".repeat(70)),
            Err("Cron expression too long"),
        );
        check(
            "",
            Err("Invalid cron expression (expected 5 fields: m h dom mon dow)"),
        );
        check(
            "* * * *",
            Err("Invalid cron expression (expected 5 fields: m h dom mon dow)"),
        );
        check(
            "0 * * * * *",
            Err("Invalid cron expression (expected 5 fields: m h dom mon dow)"),
        );
        check(
            "0 9 * * MON",
            Err("Invalid cron expression (unsupported characters)"),
        );
        check(
            "0 9 ? * *",
            Err("Invalid cron expression (unsupported characters)"),
        );
        check(
            "0 9 1 * 1",
            Err("Cron cannot set both day-of-month and day-of-week"),
        );
        check(
            "0 9 */2 * 1",
            Err("Cron cannot set both day-of-month and day-of-week"),
        );
        for min in ["*", "*/1", "*/2", "*/3", "*/4"] {
            check(
                &format!("{min} * * * *"),
                Err("Cron too frequent (minimum interval is 5 minutes)"),
            );
        }
        for bad in [
            "60 * * * *",
            "0 24 * * *",
            "0 0 0 * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "1- * * * *",
            ",5 * * * *",
        ] {
            check(bad, Err("Invalid cron expression (value out of range)"));
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// The next run after `after` of `cron` in `tz`, as RFC 3339 UTC.
    fn check_next(cron: &str, tz: &str, after: &str, expected: Option<&str>) {
        let got = next_run(cron, tz, utc(after));
        assert_eq!(got, expected.map(utc), "{cron:?} in {tz} after {after}");
    }

    #[test]
    fn next_runs_follow_the_zone_and_vixie_semantics() {
        check_next(
            "*/5 * * * *",
            "UTC",
            "2025-03-01T10:02:30Z",
            Some("2025-03-01T10:05:00Z"),
        );
        check_next(
            "*/5 * * * *",
            "UTC",
            "2025-03-01T10:05:00Z",
            Some("2025-03-01T10:10:00Z"),
        );
        check_next(
            "0 9 * * *",
            "Europe/Berlin",
            "2025-01-15T12:00:00Z",
            Some("2025-01-16T08:00:00Z"),
        );
        check_next(
            "0 9 * * *",
            "Europe/Berlin",
            "2025-07-15T06:00:00Z",
            Some("2025-07-15T07:00:00Z"),
        );
        // 2025-03-03 is a Monday; 7 is Sunday as 0 is.
        check_next(
            "0 0 * * 1",
            "UTC",
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T00:00:00Z"),
        );
        check_next(
            "0 0 * * 7",
            "UTC",
            "2025-03-01T00:00:00Z",
            Some("2025-03-02T00:00:00Z"),
        );
        check_next(
            "0 12 29 2 *",
            "UTC",
            "2025-03-01T00:00:00Z",
            Some("2028-02-29T12:00:00Z"),
        );
        check_next("0 0 30 2 *", "UTC", "2025-03-01T00:00:00Z", None);
        // Both day fields restricted (written outside Alga's rules): either matches.
        check_next(
            "0 0 15 * 1",
            "UTC",
            "2025-03-04T00:00:00Z",
            Some("2025-03-10T00:00:00Z"),
        );
        // New York springs forward on 2025-03-09: 02:30 does not exist that day.
        check_next(
            "30 2 * * *",
            "America/New_York",
            "2025-03-08T08:00:00Z",
            Some("2025-03-10T06:30:00Z"),
        );
        // And falls back on 2025-11-02: 01:30 happens twice, the first one fires.
        check_next(
            "30 1 * * *",
            "America/New_York",
            "2025-11-02T04:00:00Z",
            Some("2025-11-02T05:30:00Z"),
        );
        check_next(
            "30 1 * * *",
            "America/New_York",
            "2025-11-02T05:30:00Z",
            Some("2025-11-03T06:30:00Z"),
        );
        check_next("0 0 * * *", "Not/AZone", "2025-03-01T00:00:00Z", None);
    }
}
