//! Discussion hours: a school may set when pupils and parents can write in
//! conversations (a common ENT default is 07:00–20:00), in the school's time zone.
//! Pure: the time is an argument.
//!
//! Time zones are those of French schools: `Europe/Paris` (with the EU's summer time:
//! from the last Sunday of March to the last Sunday of October, changing at 01:00 UTC),
//! and the overseas académies' fixed offsets. No tz database is needed for these.

use serde::{Deserialize, Serialize};

/// When conversations are open to pupils and parents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscussionHours {
    /// Opening time, `HH:MM` (local).
    pub start: String,
    /// Closing time, `HH:MM` (local); before `start` for hours across midnight.
    pub end: String,
    /// The school's time zone (see [`ZONES`]).
    #[serde(default = "paris")]
    pub time_zone: String,
}

fn paris() -> String {
    "Europe/Paris".into()
}

/// The time zones understood, with their offset from UTC in minutes outside summer time.
pub const ZONES: &[(&str, i64)] = &[
    ("Europe/Paris", 60),
    ("UTC", 0),
    ("America/Guadeloupe", -240),
    ("America/Martinique", -240),
    ("America/Cayenne", -180),
    ("Indian/Reunion", 240),
    ("Indian/Mayotte", 180),
    ("Pacific/Noumea", 660),
    ("Pacific/Tahiti", -600),
    ("Pacific/Wallis", 720),
];

/// Minutes after midnight of `HH:MM`.
pub fn parse_hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day count since 1970-01-01.
fn year_of(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

/// The last Sunday of a month, as days since the epoch.
fn last_sunday(y: i64, m: i64) -> i64 {
    let last = days_from_civil(if m == 12 { y + 1 } else { y }, if m == 12 { 1 } else { m + 1 }, 1) - 1;
    // 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) mod 7.
    last - (last + 4).rem_euclid(7)
}

/// The offset from UTC, in minutes, of `zone` at `utc_ms`; `None` for an unknown zone.
pub fn offset_minutes(zone: &str, utc_ms: i64) -> Option<i64> {
    let base = ZONES.iter().find(|(z, _)| *z == zone)?.1;
    if zone != "Europe/Paris" {
        return Some(base);
    }
    let y = year_of(utc_ms.div_euclid(86_400_000));
    let summer_from = (last_sunday(y, 3) * 1440 + 60) * 60_000;
    let summer_to = (last_sunday(y, 10) * 1440 + 60) * 60_000;
    Some(if (summer_from..summer_to).contains(&utc_ms) { base + 60 } else { base })
}

impl DiscussionHours {
    /// Checks the hours are readable; the problem otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let (Some(a), Some(b)) = (parse_hhmm(&self.start), parse_hhmm(&self.end)) else {
            return Err(format!("discussion hours `{}`-`{}`: times are HH:MM", self.start, self.end));
        };
        if a == b {
            return Err("discussion hours: start and end are the same".into());
        }
        if offset_minutes(&self.time_zone, 0).is_none() {
            let names: Vec<&str> = ZONES.iter().map(|(z, _)| *z).collect();
            return Err(format!("time zone `{}` is not one of {}", self.time_zone, names.join(", ")));
        }
        Ok(())
    }

    /// `Ok` when conversations are open at `utc_ms`; else how many milliseconds until
    /// they reopen, and the local opening time.
    pub fn check(&self, utc_ms: i64) -> Result<(), (i64, String)> {
        let (Some(start), Some(end), Some(off)) =
            (parse_hhmm(&self.start), parse_hhmm(&self.end), offset_minutes(&self.time_zone, utc_ms))
        else {
            // Validated at import; an unreadable setting never locks people out.
            return Ok(());
        };
        let local_ms = (utc_ms + off * 60_000).rem_euclid(86_400_000);
        let now = local_ms / 60_000;
        let open = if start < end { (start..end).contains(&now) } else { now >= start || now < end };
        if open {
            return Ok(());
        }
        let wait = (start * 60_000 - local_ms).rem_euclid(86_400_000);
        Err((wait, self.start.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds since the epoch of a UTC date and time.
    fn utc(y: i64, m: i64, d: i64, h: i64, min: i64) -> i64 {
        (days_from_civil(y, m, d) * 1440 + h * 60 + min) * 60_000
    }

    #[test]
    fn paris_summer_time_follows_the_eu_rule() {
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 1, 15, 12, 0)), Some(60));
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 7, 1, 12, 0)), Some(120));
        // 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 3, 29, 0, 59)), Some(60));
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 3, 29, 1, 0)), Some(120));
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 10, 25, 0, 59)), Some(120));
        assert_eq!(offset_minutes("Europe/Paris", utc(2026, 10, 25, 1, 0)), Some(60));
        assert_eq!(offset_minutes("Indian/Reunion", utc(2026, 7, 1, 12, 0)), Some(240));
        assert_eq!(offset_minutes("Mars/Olympus", 0), None);
        assert_eq!(year_of(days_from_civil(2028, 2, 29)), 2028);
    }

    #[test]
    fn open_and_closed_hours_with_the_time_to_reopen() {
        let h = DiscussionHours { start: "07:00".into(), end: "20:00".into(), time_zone: "Europe/Paris".into() };
        assert!(h.validate().is_ok());
        // Winter: Paris is UTC+1. 06:59 local = 05:59 UTC: closed, reopens in a minute.
        assert_eq!(h.check(utc(2026, 12, 1, 5, 59)), Err((60_000, "07:00".into())));
        assert_eq!(h.check(utc(2026, 12, 1, 6, 0)), Ok(()));
        assert_eq!(h.check(utc(2026, 12, 1, 18, 59)), Ok(()), "19:59 local");
        // 20:00 local: closed until 07:00 tomorrow, 11 hours.
        assert_eq!(h.check(utc(2026, 12, 1, 19, 0)), Err((11 * 3_600_000, "07:00".into())));
        // Summer: UTC+2.
        assert_eq!(h.check(utc(2026, 6, 1, 4, 59)), Err((60_000, "07:00".into())));
        assert_eq!(h.check(utc(2026, 6, 1, 5, 0)), Ok(()));
        // Overseas: Réunion at UTC+4, no summer time.
        let r = DiscussionHours { time_zone: "Indian/Reunion".into(), ..h.clone() };
        assert_eq!(r.check(utc(2026, 6, 1, 3, 0)), Ok(()), "07:00 in Saint-Denis");
        // Hours across midnight.
        let night = DiscussionHours { start: "22:00".into(), end: "02:00".into(), time_zone: "UTC".into() };
        assert_eq!(night.check(utc(2026, 6, 1, 23, 0)), Ok(()));
        assert_eq!(night.check(utc(2026, 6, 1, 1, 59)), Ok(()));
        assert!(night.check(utc(2026, 6, 1, 12, 0)).is_err());
        for bad in [("7:00", "20:00"), ("07:00", "24:00"), ("07:00", "07:00"), ("ab:cd", "20:00")] {
            let b = DiscussionHours { start: bad.0.into(), end: bad.1.into(), time_zone: "UTC".into() };
            assert!(b.validate().is_err(), "{bad:?}");
        }
        assert!(DiscussionHours { time_zone: "Europe/Berlin".into(), ..h }.validate().is_err());
    }
}
