//! Candidate validators: checksums, entropy and shape checks applied after a pattern matched.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iban::{Iban, IbanLike, ParseIbanError};

/// Minimum Shannon entropy (bits/char) of a vendor token body. Matches gitleaks' `entropy = 3`
/// on its GitHub rules; rejects placeholders such as `ghp_xxxx…`. (gitleaks' AWS rule has it
/// too; AWS key ids do not follow it, see [`aws_key_id_ok`].)
pub(crate) const MIN_TOKEN_ENTROPY: f64 = 3.0;

/// Generic key/value secrets need strictly more than this many bits per character.
pub(crate) const MIN_GENERIC_ENTROPY: f64 = 3.0;

/// Minimum and maximum length (bytes) of a generic secret value.
pub(crate) const GENERIC_MIN_LEN: usize = 16;
pub(crate) const GENERIC_MAX_LEN: usize = 512;

/// Shannon entropy of the byte distribution of `s`, in bits per byte (0 for empty input).
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// `[A-Za-z0-9_]`: characters that glue tokens together.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Payment card check: 13–19 ASCII digits whose issuer identification number (ISO/IEC
/// 7812 IIN, first digits) belongs to a card brand that issues numbers of this length, a
/// valid Luhn check digit (via the `luhn` crate), and not one repeated digit. Contiguous
/// runs (`grouped == false`) of 17–19 digits are rejected: in practice they are integer
/// constants and ids far more often than the rare 17–19-digit cards, which are printed in
/// groups.
pub(crate) fn card_number_ok(digits: &str, grouped: bool) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if !grouped && len > 16 {
        return false;
    }
    let first = digits.as_bytes()[0];
    if digits.bytes().all(|b| b == first) {
        return false;
    }
    brand_length_ok(digits) && luhn::valid(digits)
}

/// IIN ranges and lengths of the major brands (ISO/IEC 7812 registrations as published by
/// the networks; summarised in Wikipedia's "Payment card number" table).
fn brand_length_ok(digits: &str) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits
            .bytes()
            .take(n)
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    match p2 {
        // Visa.
        40..=49 => matches!(len, 13 | 16 | 19),
        // Mastercard (51–55 and the 2221–2720 series); Mir (2200–2204).
        51..=55 => len == 16,
        22..=27 if (2221..=2720).contains(&p4) => len == 16,
        22 if (2200..=2204).contains(&p4) => (16..=19).contains(&len),
        // American Express.
        34 | 37 => len == 15,
        // Diners Club (300–305, 36, 38, 39).
        30 if (300..=305).contains(&p3) => (14..=19).contains(&len),
        36 | 38 | 39 => (14..=19).contains(&len),
        // JCB.
        35 if (3528..=3589).contains(&p4) => (16..=19).contains(&len),
        // UATP (Universal Air Travel Plan, MII 1): 15 digits.
        10..=19 => len == 15,
        // Discover (6011, 644–649, 65), UnionPay (62), Maestro (50, 56–69).
        60..=69 | 50 | 56..=58 => (13..=19).contains(&len),
        _ => false,
    }
}

/// IBAN check (ISO 13616 mod-97 plus the registered per-country BBAN format), delegated to
/// the `iban_validate` crate. `compact` is the electronic format (no spaces). Countries
/// that the crate's copy of the SWIFT IBAN registry lacks are checked against
/// [`REGISTRY_FALLBACK`]: the crate has already verified the ISO 7064 mod-97-10 check
/// digits, and the fallback adds the registry's length and BBAN structure.
pub(crate) fn iban_ok(compact: &str) -> bool {
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    match compact.parse::<Iban>() {
        Ok(_) => true,
        Err(ParseIbanError::UnknownCountry(base)) => {
            let country = base.country_code();
            let bban = &base.electronic_str()[4..];
            REGISTRY_FALLBACK.iter().any(|&(code, len, bban_ok)| {
                code == country && compact.len() == len && bban_ok(bban)
            })
        }
        Err(_) => false,
    }
}

/// A registry entry: country code, IBAN length, BBAN structure check.
type RegistryEntry = (&'static str, usize, fn(&str) -> bool);

/// Registry entries missing from `iban_validate` 5.0.1 (the newest release): country code,
/// IBAN length and BBAN structure, from the SWIFT IBAN Registry.
/// - Pakistan (`PK`): 24 characters, BBAN `4!a16!c` (a
///   4-letter bank code, then 16 alphanumerics), e.g. `PK36SCBL0000001123456702`.
const REGISTRY_FALLBACK: &[RegistryEntry] = &[("PK", 24, |bban| {
    bban.len() == 20
        && bban[..4].bytes().all(|b| b.is_ascii_uppercase())
        && bban[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
})];

/// JWS compact serialization check (RFC 7515 §7.1 / RFC 7519): the header decodes
/// (base64url, unpadded) to a JSON object mentioning `"alg"`, the payload decodes to a JSON
/// object, and a signature segment follows (it may be empty, `alg: none`) — or, with no
/// third segment at all, the header declares `"typ":"JWT"`.
pub(crate) fn jwt_ok(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), signature, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let json_object = |seg: &str| -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(seg.trim_end_matches('=')).ok()?;
        let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace())?;
        (first == b'{').then_some(bytes)
    };
    let Some(h) = json_object(header) else {
        return false;
    };
    let has_alg = h.windows(5).any(|w| w == b"\"alg\"");
    // Without a signature segment, the header must say it is a JWT (`"typ":"JWT"`).
    let typed = signature.is_some() || header_declares_jwt(&h);
    has_alg && typed && json_object(payload).is_some()
}

/// Whether a decoded JOSE header has `"typ"` set to `"JWT"` (RFC 7519 §5.1), whitespace
/// around the colon allowed.
fn header_declares_jwt(h: &[u8]) -> bool {
    let Some(i) = h.windows(5).position(|w| w == b"\"typ\"") else {
        return false;
    };
    let rest: Vec<u8> = h[i + 5..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .take(6)
        .collect();
    rest.eq_ignore_ascii_case(b":\"JWT\"")
}

/// Shape checks on a vendor token body: entropy at least [`MIN_TOKEN_ENTROPY`].
pub(crate) fn token_body_ok(body: &str) -> bool {
    shannon_entropy(body) >= MIN_TOKEN_ENTROPY
}

/// Whether a matched AWS key id (prefix and 16 uppercase alphanumerics) is reported.
///
/// No entropy floor or distinct-character count applies: detect-secrets'
/// `AWSKeyDetector` (`tests/plugins/aws_key_test.py` flags `AKIAZZZZZZZZZZZZZZZZ` and
/// its `ASIA`/`ABIA`/`ACCA`/`A3T0` variants), noseyparker's `np.aws.1` (example
/// `AKIADEADBEEFDEADBEEF`) and secretlint's `secretlint-rule-aws` report every id of
/// that shape, and a guardrail that redacts text before an LLM sees it favours recall.
/// Two kinds of placeholder are not reported:
/// - AWS's documentation example ids, which end in `EXAMPLE` (`AKIAIOSFODNN7EXAMPLE`,
///   `AKIAI44QH8DHBEXAMPLE`): gitleaks' `aws-access-token` allowlist `.+EXAMPLE$`;
///   secretlint's `BUILTIN_IGNORED` and AWS's own git-secrets (`--register-aws`,
///   `secrets.allowed`) list `AKIAIOSFODNN7EXAMPLE` as the key of AWS's examples.
/// - a body of `X` only (`AKIAXXXXXXXXXXXXXXXX`): `X` is the masking character, so the
///   id was already redacted (gitleaks lists it among the rule's false positives).
pub(crate) fn aws_key_id_ok(id: &str) -> bool {
    let body = id.get(4..).unwrap_or_default();
    !id.ends_with("EXAMPLE") && !body.bytes().all(|b| b == b'X')
}

/// Whether `s` holds `n` or more consecutive ASCII alphanumerics in ascending order
/// (`abcdef`, `123456`). A random base62 string of 48 characters holds a run of six with
/// probability below 1e-7, so such a run marks a hand-typed example.
pub(crate) fn has_ascending_run(s: &str, n: usize) -> bool {
    let b = s.as_bytes();
    let mut run = 1;
    for w in b.windows(2) {
        if w[0].is_ascii_alphanumeric()
            && w[1] == w[0].wrapping_add(1)
            && w[1].is_ascii_alphanumeric()
        {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 1;
        }
    }
    false
}

/// Whether `body` mixes lowercase, uppercase and digits, as a random base62 key body of 32+
/// characters does except with negligible probability (< 1e-7), while hyphenated prose
/// slugs after `sk-` (`sk-learn-tutorial-part-2`) do not.
pub(crate) fn mixed_case_and_digits(body: &str) -> bool {
    body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_digit())
}

/// Placeholder fragments (lowercase) that disqualify a generic secret value.
const PLACEHOLDERS: &[&str] = &[
    "example",
    "placeholder",
    "changeme",
    "change_me",
    "change-me",
    "xxxx",
    "****",
    "your_",
    "your-",
    "yourapi",
    "redacted",
    "dummy",
    "replace",
    "insert",
    "todo",
];

/// Checks on the value of a `key = value` style candidate; see [`crate::Detector::GenericSecret`].
pub(crate) fn generic_value_ok(value: &str) -> bool {
    let len = value.len();
    if !(GENERIC_MIN_LEN..=GENERIC_MAX_LEN).contains(&len) {
        return false;
    }
    let first = value.as_bytes()[0];
    // Variable references and templates: $VAR, ${VAR}, %(var)s, {{ var }}, <your-key>.
    if matches!(first, b'$' | b'%' | b'{' | b'<' | b'#' | b'@' | b'&' | b'*') {
        return false;
    }
    // Paths and URLs: absolute or explicitly relative, or a relative path to a file with an
    // extension (`models/llama-3.1-8b/tokenizer.json`; base64 secrets contain `/` but no `.`).
    if value.starts_with('/')
        || value.starts_with("./")
        || value.starts_with("../")
        || value.starts_with("~/")
        || value.contains("://")
        || is_relative_file_path(value)
    {
        return false;
    }
    // Dates and timestamps: 2024-01-15, 2024-01-15T10:30:00Z.
    let b = value.as_bytes();
    if b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
    {
        return false;
    }
    // gitleaks generic-api-key allowlist: words made of letters and `_.-` only.
    if value
        .bytes()
        .all(|c| c.is_ascii_alphabetic() || matches!(c, b'_' | b'.' | b'-'))
    {
        return false;
    }
    let classes = [
        value.bytes().any(|c| c.is_ascii_lowercase()),
        value.bytes().any(|c| c.is_ascii_uppercase()),
        value.bytes().any(|c| c.is_ascii_digit()),
        value.bytes().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if classes.iter().filter(|&&c| c).count() < 2 {
        return false;
    }
    // Slugs, identifiers and paths: `en-US-2024`, `crate::MAX_TOKENS`, `projects/demo/3` —
    // every `-`/`_`/`.`/`/`/`:` separated word is all letters or all digits.
    if value.split(['-', '_', '.', '/', ':']).all(|w| {
        w.bytes().all(|c| c.is_ascii_alphabetic()) || w.bytes().all(|c| c.is_ascii_digit())
    }) {
        return false;
    }
    if looks_like_code_identifier(value) || is_host(value) || has_ascending_run(value, 10) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return false;
    }
    shannon_entropy(value) > MIN_GENERIC_ENTROPY
}

/// Values that name a setting rather than hold a password (`password: "required"`).
const NOT_A_PASSWORD: &[&str] = &[
    "true",
    "false",
    "null",
    "none",
    "nil",
    "undefined",
    "required",
    "optional",
    "string",
    "hidden",
    "empty",
];

/// Checks on a literal under the password rule of [`crate::Detector::GenericSecret`]
/// (detect-secrets' `KeywordDetector` filters, noseyparker's password rules): 4–64
/// characters on one line (no escaped `\n` either), at least one ASCII letter or digit (detect-secrets
/// `is_not_alphanumeric_string`), and not
/// - a reference or template: starting with `$`, `%`, `@`, `&`, `*`, a quote, or wrapped
///   in `{…}` / `<…>` (detect-secrets `is_templated_secret`), or `#` plus a slug
///   (`#add-password`, a CSS selector);
/// - a path, route, URL or ARN (`/`, `::`), a dotted reference (`env.DB_PASSWORD`), a
///   call (`get_password()`), or a `snake_case` / `SCREAMING_SNAKE` name (`"OPENAI_API_KEY"`);
/// - a placeholder (the generic list plus `fake`) or a setting word (`required`, `none`,
///   `true`, …).
pub(crate) fn password_value_ok(value: &str) -> bool {
    password_literal_ok(value, false)
}

/// [`password_value_ok`], with `allow_names` letting `snake_case` / `SCREAMING_SNAKE`
/// values through (an unquoted value after a username: `password = open_sesame`).
pub(crate) fn password_literal_ok(value: &str, allow_names: bool) -> bool {
    let chars = value.chars().count();
    if !(4..=64).contains(&chars)
        || value.contains(['\n', '\r'])
        || value.contains("\\n")
        || value.contains("\\r")
    {
        return false;
    }
    let b = value.as_bytes();
    if !b.iter().any(u8::is_ascii_alphanumeric) {
        return false;
    }
    let first = b[0];
    let last = b[b.len() - 1];
    if matches!(first, b'$' | b'%' | b'@' | b'&' | b'*' | b'"' | b'\'')
        || (first == b'{' && last == b'}')
        || (first == b'<' && last == b'>')
    {
        return false;
    }
    if first == b'#'
        && value[1..]
            .bytes()
            .all(|c| c.is_ascii_alphabetic() || matches!(c, b'-' | b'_'))
    {
        return false;
    }
    if value.contains('/') || value.contains("::") || value.contains("()") {
        return false;
    }
    // Identifier-shaped literals name something (`"OPENAI_API_KEY"`, `"private_key"`).
    let snake = value.contains('_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && (b.iter().all(|c| !c.is_ascii_lowercase()) || b.iter().all(|c| !c.is_ascii_uppercase()))
        && b.iter().any(u8::is_ascii_alphabetic);
    if snake && !allow_names {
        return false;
    }
    let dotted = value.contains('.')
        && value.split('.').all(|w| {
            w.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && w.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        });
    if dotted {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    !(PLACEHOLDERS.iter().any(|p| lower.contains(p))
        || lower.contains("fake")
        || NOT_A_PASSWORD.contains(&lower.as_str()))
}

/// Whether `value` is a host name or `host:port` (`dev-lb1.api.example.com:5215`):
/// lowercase dot-separated labels of letters, digits and `-`, the last one letters only
/// (2–24, a TLD), then optionally `:` and a port.
fn is_host(value: &str) -> bool {
    let host = match value.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty() && port.len() <= 5 && port.bytes().all(|c| c.is_ascii_digit()) =>
        {
            h
        }
        Some(_) => return false,
        None => value,
    };
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() >= 3
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
        && labels.last().is_some_and(|t| {
            (2..=24).contains(&t.len()) && t.bytes().all(|c| c.is_ascii_lowercase())
        })
}

/// `dir/name.ext`: contains `/`, and the last segment ends in a 1–5 character extension
/// with a letter.
fn is_relative_file_path(value: &str) -> bool {
    let Some((_, file)) = value.rsplit_once('/') else {
        return false;
    };
    let Some((stem, ext)) = file.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && (1..=5).contains(&ext.len())
        && ext.bytes().all(|c| c.is_ascii_alphanumeric())
        && ext.bytes().any(|c| c.is_ascii_alphabetic())
}

/// Whether `value` is a code identifier or path (`super::Win32::DEVPROPKEY`,
/// `X509KeyUsageFlags`, `DOT11_KEY_DIRECTION`) rather than a random secret: it contains
/// `::`, or it is identifier-shaped (a letter, `_` or `$`, then `[A-Za-z0-9_$.-]`) and
/// either a `SCREAMING_SNAKE` constant with two or more underscores or made of words
/// averaging at least three characters (see [`mean_word_len`]). Random strings split
/// into words of one or two characters, so they stay well below that.
fn looks_like_code_identifier(value: &str) -> bool {
    if value.contains("::") {
        return true;
    }
    let b = value.as_bytes();
    let shaped = b
        .first()
        .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_' || c == b'$')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.' | b'-'));
    if !shaped {
        return false;
    }
    let screaming =
        !b.iter().any(u8::is_ascii_lowercase) && b.iter().filter(|&&c| c == b'_').count() >= 2;
    screaming || mean_word_len(b) >= 3.0
}

/// Mean length of the words of an identifier, split at non-alphanumerics, letter/digit
/// changes and camel-case humps (`X509KeyUsage` → `X`, `509`, `Key`, `Usage`;
/// `ECDHKey` → `ECDH`, `Key`).
fn mean_word_len(b: &[u8]) -> f64 {
    let mut words = 0u32;
    let mut chars = 0u32;
    for (i, &c) in b.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            continue;
        }
        chars += 1;
        let starts = match i.checked_sub(1).map(|j| b[j]) {
            None => true,
            Some(p) => {
                !p.is_ascii_alphanumeric()
                    || p.is_ascii_digit() != c.is_ascii_digit()
                    || (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                    || (p.is_ascii_uppercase()
                        && c.is_ascii_uppercase()
                        && b.get(i + 1).is_some_and(u8::is_ascii_lowercase))
            }
        };
        if starts {
            words += 1;
        }
    }
    f64::from(chars) / f64::from(words.max(1))
}

/// Masks `value` for display: at most `min(4, n/4)` characters from each end are kept and
/// joined by `...`; values shorter than 8 characters become `***`. At most half of the
/// characters are ever shown, so the result never contains the whole value.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    let keep = (n / 4).min(4);
    if n < 8 || keep == 0 {
        return "***".to_owned();
    }
    let head: String = value.chars().take(keep).collect();
    let tail: String = value.chars().skip(n - keep).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!(shannon_entropy("IOSFODNN7EXAMPLE") > 3.5);
    }

    #[test]
    fn aws_key_ids() {
        assert!(aws_key_id_ok("AKIAQ3VR7NXL2MTB5KDW"));
        assert!(aws_key_id_ok("AKIAZZZZZZZZZZZZZZZZ")); // detect-secrets' test key
        assert!(aws_key_id_ok("A3TXXXXXXXXXXXXXXXXY"));
        assert!(aws_key_id_ok("AKIAEXAMPLE123456789"));
        assert!(!aws_key_id_ok("AKIAIOSFODNN7EXAMPLE")); // AWS documentation
        assert!(!aws_key_id_ok("AKIAI44QH8DHBEXAMPLE"));
        assert!(!aws_key_id_ok("AKIAXXXXXXXXXXXXXXXX")); // mask
        assert!(!aws_key_id_ok("A3TXXXXXXXXXXXXXXXXX"));
    }

    #[test]
    fn cards() {
        assert!(card_number_ok("4111111111111111", false));
        assert!(card_number_ok("378282246310005", false));
        assert!(card_number_ok("30569309025904", false));
        assert!(card_number_ok("3530111333300000", false));
        assert!(!card_number_ok("4111111111111112", false));
        assert!(!card_number_ok("1234567812345670", false)); // Luhn-valid, MII 1
        assert!(!card_number_ok("411111111111", false)); // too short
        assert!(!card_number_ok("5575266562640200287", false)); // Luhn-valid constant
        assert!(!card_number_ok("3782822463100050", false)); // Amex is 15 digits
        assert!(!card_number_ok("35184372088832", false)); // 35xx outside JCB
    }

    #[test]
    fn ibans() {
        assert!(iban_ok("GB82WEST12345698765432"));
        assert!(!iban_ok("GB83WEST12345698765432"));
        assert!(!iban_ok("XX82WEST12345698765432"));
        // Pakistan, missing from the crate's registry copy (fallback entry).
        assert!(iban_ok("PK36SCBL0000001123456702"));
        assert!(!iban_ok("PK37SCBL0000001123456702")); // check digits
        assert!(!iban_ok("PK9012340000001123456702")); // mod-97 ok, bank code not letters
        assert!(!iban_ok("PK36SCBL000000112345670")); // one character short
    }

    #[test]
    fn generic_values() {
        assert!(generic_value_ok("Xk9#mP2$vL5@nQ8!"));
        assert!(!generic_value_ok("changeme"));
        assert!(!generic_value_ok("correcthorsebatterystaple"));
        assert!(!generic_value_ok("1234567890123456"));
        assert!(!generic_value_ok("${GITHUB_TOKEN_VALUE}"));
        assert!(!generic_value_ok("2024-01-15T10:30:00Z"));
        assert!(!generic_value_ok(
            "super::super::Win32::Foundation::DEVPROPKEY"
        ));
        assert!(!generic_value_ok("X509CertificateTemplatePrivateKeyFlag"));
        assert!(!generic_value_ok("D3DKMT_PNP_KEY_TYPE"));
        assert!(!generic_value_ok("nl80211_rekey_data"));
        assert!(generic_value_ok("q3JmX8vT2nLw9ZkR5pYc"));
        assert!(!generic_value_ok("models/llama-3.1-8b/tokenizer.json"));
        assert!(generic_value_ok("wJalrXUtnFEMI/K7MDENG/bPxRfiCY1234567KEY"));
        assert!(generic_value_ok("rk_test_51H8xYzAbCdEf12345678"));
        assert!((mean_word_len(b"X509KeyUsage") - 3.0).abs() < 1e-9);
        assert!((mean_word_len(b"ECDHKey") - 3.5).abs() < 1e-9);
    }

    #[test]
    fn masking() {
        assert_eq!(mask("sk-proj-abcdefghijklmnop4f2a"), "sk-p...4f2a");
        assert_eq!(mask("short"), "***");
        assert_eq!(mask("12345678"), "12...78");
        assert_eq!(mask("ééééééééé"), "éé...éé");
    }
}
