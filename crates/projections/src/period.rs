//! Reporting periods: a moment belongs to its year (`2026`), half (`2026-H2`), quarter
//! (`2026-Q4`) and month (`2026-11`).

use ledger_domain::Micros;

use crate::documents::prefix_end;

/// The periods containing `micros` (UTC): year, half, quarter, month.
pub fn periods_of(micros: Micros) -> [String; 4] {
    let days = micros.div_euclid(86_400_000_000);
    let (year, month) = civil_from_days(days);
    [
        format!("{year}"),
        format!("{year}-H{}", if month <= 6 { 1 } else { 2 }),
        format!("{year}-Q{}", (month - 1) / 3 + 1),
        format!("{year}-{month:02}"),
    ]
}

/// The month `micros` falls in (UTC) as `2026-11`, the year padded to four digits so that
/// months sort as text in time order (read models file documents under it).
pub(crate) fn month_of(micros: Micros) -> String {
    let (year, month) = civil_from_days(micros.div_euclid(86_400_000_000));
    format!("{year:04}-{month:02}")
}

/// The keys, from (inclusive) and until (exclusive), of the documents filed under `prefix` by
/// month (`{prefix}{YYYY-MM}/...`, see [`month_of`]) in the months the span `[start, end)`
/// touches; an empty range for an empty span.
pub(crate) fn month_keys(prefix: &str, (start, end): (Micros, Micros)) -> (String, String) {
    let from = format!("{prefix}{}/", month_of(start));
    if end <= start {
        return (from.clone(), from);
    }
    let until = prefix_end(&format!("{prefix}{}/", month_of(end - 1)));
    (from, until)
}

/// The periods a period lies within, itself first: `2026-11` → `2026-11`, `2026-Q4`, `2026-H2`,
/// `2026`. A goal set for a period shows in the briefs of every period around it.
pub fn enclosing(period: &str) -> Vec<String> {
    let Some((year, part)) = period.split_once('-') else {
        return vec![period.to_owned()];
    };
    let month = match part.as_bytes().first() {
        Some(b'H') => return vec![period.to_owned(), year.to_owned()],
        Some(b'Q') => {
            let quarter: u32 = part[1..].parse().unwrap_or(1);
            let half = if quarter <= 2 { 1 } else { 2 };
            return vec![
                period.to_owned(),
                format!("{year}-H{half}"),
                year.to_owned(),
            ];
        }
        _ => part.parse::<u32>().unwrap_or(1),
    };
    vec![
        period.to_owned(),
        format!("{year}-Q{}", (month - 1) / 3 + 1),
        format!("{year}-H{}", if month <= 6 { 1 } else { 2 }),
        year.to_owned(),
    ]
}

/// The half-open span `[start, end)` of a period, in microseconds (UTC); `None` if malformed.
pub fn bounds(period: &str) -> Option<(Micros, Micros)> {
    let (year, first, count) = parts(period)?;
    let start = days_from_civil(year, first);
    let (end_year, end_month) = if first + count > 12 {
        (year + 1, first + count - 12)
    } else {
        (year, first + count)
    };
    const DAY: Micros = 86_400_000_000;
    Some((start * DAY, days_from_civil(end_year, end_month) * DAY))
}

/// How many months a period spans: 12, 6, 3 or 1.
pub fn months(period: &str) -> u32 {
    parts(period).map_or(1, |(_, _, count)| count)
}

/// The period of the same length just before: `2026-Q1` → `2025-Q4`, `2026` → `2025`.
pub fn previous(period: &str) -> Option<String> {
    let (year, first, count) = parts(period)?;
    let (year, first) = if first > count {
        (year, first - count)
    } else {
        (year - 1, first + 12 - count)
    };
    Some(match count {
        12 => format!("{year}"),
        6 => format!("{year}-H{}", first / 6 + 1),
        3 => format!("{year}-Q{}", first / 3 + 1),
        _ => format!("{year}-{first:02}"),
    })
}

/// (year, first month, months) of a period.
fn parts(period: &str) -> Option<(i64, u32, u32)> {
    let (year, part) = match period.split_once('-') {
        Some((year, part)) => (year, Some(part)),
        None => (period, None),
    };
    let year: i64 = year.parse().ok()?;
    let (first, count) = match part {
        None => (1, 12),
        Some("H1") => (1, 6),
        Some("H2") => (7, 6),
        Some(q) if q.starts_with('Q') => {
            let quarter: u32 = q[1..].parse().ok().filter(|q| (1..=4).contains(q))?;
            ((quarter - 1) * 3 + 1, 3)
        }
        Some(m) => (m.parse().ok().filter(|m| (1..=12).contains(m))?, 1),
    };
    Some((year, first, count))
}

/// Days since 1970-01-01 of the first day of (year, month) (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_sort_as_text_in_time_order() {
        // 2026-12-01T10:00:00Z, 0999-03-01, 1970-01-01.
        assert_eq!(month_of(1_796_119_200_000_000), "2026-12");
        let year_999 = days_from_civil(999, 3) * 86_400_000_000;
        assert_eq!(month_of(year_999), "0999-03");
        assert_eq!(month_of(0), "1970-01");
        let mut months = [
            month_of(1_796_119_200_000_000),
            month_of(year_999),
            month_of(0),
        ];
        months.sort();
        assert_eq!(months, ["0999-03", "1970-01", "2026-12"]);
    }

    #[test]
    fn moments_fall_into_their_periods() {
        // 2026-12-01T10:00:00Z
        assert_eq!(
            periods_of(1_796_119_200_000_000),
            ["2026", "2026-H2", "2026-Q4", "2026-12"]
        );
        // 2024-02-29T00:00:00Z, a leap day.
        assert_eq!(
            periods_of(1_709_164_800_000_000),
            ["2024", "2024-H1", "2024-Q1", "2024-02"]
        );
        assert_eq!(periods_of(0), ["1970", "1970-H1", "1970-Q1", "1970-01"]);
    }

    #[test]
    fn periods_have_bounds_and_predecessors() {
        let (start, end) = bounds("2026-12").unwrap();
        assert_eq!(periods_of(start)[3], "2026-12");
        assert_eq!(periods_of(start - 1)[3], "2026-11");
        assert_eq!(periods_of(end)[3], "2027-01");
        assert_eq!(periods_of(end - 1)[3], "2026-12");
        let (start, end) = bounds("2024-Q1").unwrap();
        assert_eq!(start, 1_704_067_200_000_000);
        assert_eq!((end - start) / 86_400_000_000, 31 + 29 + 31);
        assert_eq!(bounds("2026").unwrap().1, bounds("2027-H1").unwrap().0);
        assert_eq!(bounds("2026-13"), None);
        assert_eq!(previous("2026-Q1").unwrap(), "2025-Q4");
        assert_eq!(previous("2026-Q3").unwrap(), "2026-Q2");
        assert_eq!(previous("2026-H1").unwrap(), "2025-H2");
        assert_eq!(previous("2026-H2").unwrap(), "2026-H1");
        assert_eq!(previous("2026-01").unwrap(), "2025-12");
        assert_eq!(previous("2026-11").unwrap(), "2026-10");
        assert_eq!(previous("2026").unwrap(), "2025");
        assert_eq!(
            (
                months("2026"),
                months("2026-H2"),
                months("2026-Q4"),
                months("2026-11")
            ),
            (12, 6, 3, 1)
        );
    }

    proptest::proptest! {
        /// Until 2100: a moment is within the bounds of exactly the periods it falls into.
        #[test]
        fn bounds_hold_exactly_the_moments_of_their_period(
            at in 0i64..4_102_444_800_000_000,
            other in 0i64..4_102_444_800_000_000,
        ) {
            for period in periods_of(other).iter().chain(&periods_of(at)) {
                let (start, end) = bounds(period).unwrap();
                proptest::prop_assert_eq!(
                    (start..end).contains(&at),
                    periods_of(at).contains(period)
                );
            }
        }
    }

    #[test]
    fn periods_enclose_their_parts() {
        assert_eq!(
            enclosing("2026-11"),
            ["2026-11", "2026-Q4", "2026-H2", "2026"]
        );
        assert_eq!(enclosing("2026-Q2"), ["2026-Q2", "2026-H1", "2026"]);
        assert_eq!(enclosing("2026-H2"), ["2026-H2", "2026"]);
        assert_eq!(enclosing("2026"), ["2026"]);
    }
}
