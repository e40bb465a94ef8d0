//! Phone-number confirmation with libphonenumber's metadata, through the `phonenumber`
//! crate (a Rust port of Google's libphonenumber carrying its `PhoneNumberMetadata.xml`).
//!
//! The scanner finds candidates cheaply (digit runs, see `scanner.rs`); this module only
//! confirms them. A candidate is a phone number when libphonenumber parses it and calls it
//! **valid** (the number lies in a range its numbering plan assigns), it has at most one
//! `/` (libphonenumber's matcher rejects `650/253/1234`), and
//! - it is in international form (`+CC …`, or after the `00`/`011` international
//!   prefixes): nothing more is asked; or
//! - it is in the national form of one of [`NATIONAL_REGIONS`]: its digits are those of
//!   libphonenumber's national format, or the national prefix plus the national number;
//!   its digit groups never split a group of libphonenumber's national or international
//!   format (libphonenumber's `Leniency.STRICT_GROUPING` idea: `415 666 7777` passes, an
//!   SSN-shaped `078-05-1120` does not); a bare digit run must be a mobile number (or a
//!   NANP number, which the plan does not tell from a fixed line); and it is not a date
//!   or time (`01-02-2024 10`).
//!
//! Invariant: never panics; a panic inside the crate on odd input is caught and read as
//! "not a phone number".

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber, Type};

/// Regions whose national formats are recognised in numbers written without a country
/// code: the regions the Presidio PII recognizer supports by default (US and Canada
/// through the NANP, the UK, Germany, Israel, India, Brazil) plus France, Japan and China.
/// Numbers of other regions are found in international form.
pub(crate) const NATIONAL_REGIONS: [Id; 9] = [
    Id::US,
    Id::GB,
    Id::DE,
    Id::FR,
    Id::IL,
    Id::IN,
    Id::BR,
    Id::JP,
    Id::CN,
];

/// Fewest digits in a phone number (Niue's `+683 7290`).
pub(crate) const MIN_DIGITS: usize = 7;
/// Most digits in a candidate: 15 (ITU-T E.164) plus a 3-digit international prefix.
pub(crate) const MAX_DIGITS: usize = 18;

/// Whether `cand` (digits with separators ` -.()/`, optionally a leading `+`) is a phone
/// number; see the module header for the rule.
pub(crate) fn is_phone(cand: &str) -> bool {
    let digits: String = cand.chars().filter(char::is_ascii_digit).collect();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) || cand.matches('/').count() > 1 {
        return false;
    }
    std::panic::catch_unwind(|| confirm(cand, &digits)).unwrap_or(false)
}

fn confirm(cand: &str, digits: &str) -> bool {
    let body = cand.trim_start_matches('(');
    let international = if let Some(rest) = cand.strip_prefix('+') {
        Some(rest.to_owned())
    } else if let Some(rest) = body.strip_prefix("00") {
        Some(rest.to_owned())
    } else {
        body.strip_prefix("011").map(str::to_owned)
    };
    if let Some(rest) = international {
        // With an explicit country code the writer means a phone number: validity alone
        // decides (Presidio's default leniency, libphonenumber's `Leniency.VALID`).
        let plus = format!("+{rest}");
        if phonenumber::parse(None, &plus).is_ok_and(|n| n.is_valid()) {
            return true;
        }
        if cand.starts_with('+') {
            return false;
        }
        // `011…` is also a national number with trunk prefix 0 (UK `0114 496 0000`).
    }
    if is_date_or_time(cand) {
        return false;
    }
    let separated = cand.bytes().any(|b| !b.is_ascii_digit());
    NATIONAL_REGIONS.iter().any(|&region| {
        possible_length(region, digits)
            && phonenumber::parse(Some(region), cand).is_ok_and(|n| {
                n.is_valid()
                    && written_nationally(digits, &n, region)
                    && grouping_ok(cand, &n)
                    && (separated || personal_type(&n))
            })
    })
}

/// Cheap screen before a parse: the digits, with or without the region's national prefix,
/// have one of the lengths libphonenumber's metadata lists as possible for the region
/// (general, fixed-line, mobile or toll-free; no list means no screen).
fn possible_length(region: Id, digits: &str) -> bool {
    let Some(meta) = phonenumber::metadata::DATABASE.by_id(region.as_ref()) else {
        return false;
    };
    let d = meta.descriptors();
    let lengths: Vec<u16> = std::iter::once(d.general())
        .chain(d.fixed_line())
        .chain(d.mobile())
        .chain(d.toll_free())
        .flat_map(|x| x.possible_length().iter().copied())
        .collect();
    if lengths.is_empty() {
        return true;
    }
    let fits = |n: usize| u16::try_from(n).is_ok_and(|n| lengths.contains(&n));
    let prefix = meta.national_prefix().unwrap_or_default();
    fits(digits.len())
        || (!prefix.is_empty() && digits.starts_with(prefix) && fits(digits.len() - prefix.len()))
}

/// Whether `n` is a mobile number or one the plan does not tell from a fixed line (NANP):
/// the only numbers accepted as a bare national digit run (`4156667777`, `13812345678`),
/// since fixed-line and service ranges cover most 9–12 digit integers (ids, timestamps).
fn personal_type(n: &PhoneNumber) -> bool {
    matches!(
        n.number_type(&phonenumber::metadata::DATABASE),
        Type::Mobile | Type::FixedLineOrMobile
    )
}

/// Dates and times that national numbering plans would accept (`01-02-2024 10`,
/// `2012/01/02 08`): a day-month-year or year-month-day triple with one separator, as
/// libphonenumber's matcher excludes slash-separated dates and time stamps.
fn is_date_or_time(cand: &str) -> bool {
    let groups: Vec<&str> = cand
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let small = |g: &str, max: u32| {
        (1..=2).contains(&g.len()) && g.parse::<u32>().is_ok_and(|v| (1..=max).contains(&v))
    };
    groups.windows(3).any(|w| {
        (small(w[0], 31) && small(w[1], 31) && year(w[2]))
            || (year(w[0]) && small(w[1], 12) && small(w[2], 31))
    })
}

/// Whether `digits` are the national form of `n` in `region`: the digits of
/// libphonenumber's national format, or the region's national prefix followed by the
/// national significant number (`1 415 666 7777`, `030 123456`).
fn written_nationally(digits: &str, n: &PhoneNumber, region: Id) -> bool {
    let nsn = n.national().to_string();
    let national: String = n
        .format()
        .mode(Mode::National)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let prefix = phonenumber::metadata::DATABASE
        .by_id(region.as_ref())
        .and_then(|m| m.national_prefix())
        .unwrap_or_default();
    digits == national
        || (digits.len() == prefix.len() + nsn.len()
            && digits.starts_with(prefix)
            && digits.ends_with(&nsn))
}

/// Whether every digit-group boundary of `cand` inside the national significant number is
/// also a boundary in libphonenumber's national or international format of `n`.
fn grouping_ok(cand: &str, n: &PhoneNumber) -> bool {
    let nsn = n.national().to_string();
    let Some(cand_b) = nsn_boundaries(cand, &nsn) else {
        return false;
    };
    if cand_b.is_empty() {
        return true;
    }
    let mut allowed = Vec::new();
    for mode in [Mode::National, Mode::International] {
        let formatted = n.format().mode(mode).to_string();
        if let Some(b) = nsn_boundaries(&formatted, &nsn) {
            allowed.extend(b);
        }
    }
    cand_b.iter().all(|b| allowed.contains(b))
}

/// Positions (in digits of the national significant number `nsn`, which the digits of `s`
/// must end with) where `s` has a separator between two digits; boundaries inside the
/// country code or national prefix are ignored. `None` if `s` does not end with `nsn`.
fn nsn_boundaries(s: &str, nsn: &str) -> Option<Vec<usize>> {
    let mut count = 0usize;
    let mut cuts = Vec::new();
    let mut gap = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if gap && count > 0 {
                cuts.push(count);
            }
            gap = false;
            count += 1;
        } else {
            gap = true;
        }
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !digits.ends_with(nsn) {
        return None;
    }
    let offset = count - nsn.len();
    Some(
        cuts.into_iter()
            .filter(|&c| c > offset)
            .map(|c| c - offset)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_valid_numbers_in_their_written_forms() {
        assert!(is_phone("+1 415-666-7777"));
        assert!(is_phone("(415) 666-7777"));
        assert!(is_phone("4156667777"));
        assert!(is_phone("+44 20 7946 0958"));
        assert!(is_phone("020 7946 0958"));
        assert!(is_phone("0044 20 7946 0958"));
        assert!(is_phone("011 44 20 7946 0958"));
        assert!(!is_phone("078-05-1120")); // SSN-shaped
        assert!(!is_phone("650/253/1234"));
        assert!(!is_phone("12345"));
        assert!(!is_phone("+1 123 456 7890")); // NANP area codes do not start with 1
    }

    #[test]
    fn boundaries_are_counted_in_the_national_number() {
        assert_eq!(
            nsn_boundaries("+44 (0) 20 7946 0958", "2079460958"),
            Some(vec![2, 6])
        );
        assert_eq!(nsn_boundaries("4156667777", "4156667777"), Some(vec![]));
        assert_eq!(nsn_boundaries("123", "4567"), None);
    }
}
