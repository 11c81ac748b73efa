//! Reporting periods: a moment belongs to its year (`2026`), half (`2026-H2`), quarter
//! (`2026-Q4`) and month (`2026-11`).

use ledger_domain::Micros;

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
