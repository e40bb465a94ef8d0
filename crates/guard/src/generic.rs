//! [`Detector::GenericSecret`]: credentials found by the name they are assigned to.
//!
//! Two sources set the rules. gitleaks' `generic-api-key` (identifier keywords, the
//! assignment forms of its `GenerateSampleSecrets` templates, an entropy floor and an
//! allowlist of identifiers that name something else: `credentialsId`, `public_key`,
//! `secret_name`, …) gives the **high-entropy rule**: any keyword identifier, a value of
//! 16+ bytes that passes [`validate::generic_value_ok`]. detect-secrets' `KeywordDetector`
//! (its `DENYLIST` of password-like names, quoted values of any entropy, comparisons in
//! either direction) and noseyparker's `np.generic.3`–`np.generic.5` and `np.generic.11`–
//! `np.generic.14` (passwords after a username, `the password is '…'`) give the
//! **password rule**: a password-like name and a literal of 4–64 characters that passes
//! [`validate::password_value_ok`].

use crate::detector::{Detector, Finding};
use crate::validate;

/// Keywords (lowercase) that mark an identifier as naming a credential wherever they
/// occur in it (gitleaks `generic-api-key`: key, token, secret, passw(or)d, credential;
/// plus `pwd` and `passphrase`).
const KEYWORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "credential",
    "passphrase",
];

/// Keywords that count only as a whole word of the identifier (`db_pass`, `user_auth`,
/// `creds`; not `compass`, `author`, `authority`): gitleaks' `auth` and `creds`,
/// noseyparker's `pass` (as the last word, or after `db`, `database`, `key`).
const WORD_KEYWORDS: &[&str] = &["pass", "auth", "creds"];

/// detect-secrets `KeywordDetector.DENYLIST` (`_` optional, so written without it), plus
/// `passphrase`: names whose literal values are passwords whatever their entropy. The
/// word `pass` (noseyparker) is added in [`classify`].
const DENYLIST: &[&str] = &[
    "apikey",
    "authkey",
    "servicekey",
    "accountkey",
    "dbkey",
    "databasekey",
    "privkey",
    "privatekey",
    "clientkey",
    "dbpass",
    "databasepass",
    "keypass",
    "password",
    "passwd",
    "pwd",
    "secret",
    "passphrase",
];

/// Words that, after the keyword, make the identifier name something about the credential
/// rather than the credential (gitleaks' generic-api-key allowlist: `key_id`,
/// `credentialsId`, `key_length`, `secret_name`, `token_url`, `key_file`, `keyPair`,
/// `keyboard`, `keyframe`, …; plus user-interface text: `passwordLabel`, `…Hint`,
/// `…Prompt`, `…Placeholder`; and `passwordVariable`, which names the variable that will
/// hold it). Plural forms count too.
const NOT_SECRET_AFTER: &[&str] = &[
    "id",
    "name",
    "alias",
    "board",
    "code",
    "frame",
    "length",
    "len",
    "mesh",
    "pair",
    "press",
    "pressed",
    "ring",
    "selector",
    "signature",
    "size",
    "stone",
    "storetype",
    "word",
    "up",
    "down",
    "left",
    "right",
    "vault",
    "file",
    "path",
    "endpoint",
    "url",
    "uri",
    "version",
    "label",
    "hint",
    "prompt",
    "placeholder",
    "variable",
];

/// Words that, before the keyword, name a non-secret key (gitleaks' allowlist:
/// `public_key`, `publicToken`, `bucket_key`, `schemaKey`, `csrf-token`, …).
const NOT_SECRET_BEFORE: &[&str] = &[
    "public", "pub", "bucket", "foreign", "hot", "idx", "natural", "primary", "schema", "sequence",
    "csrf",
];

/// How an identifier names a credential: `Some(false)` for a keyword (high-entropy rule
/// only), `Some(true)` for a password-like name (both rules), `None` for neither.
fn classify(ident: &[u8]) -> Option<bool> {
    if ident.is_empty() || ident.len() > 64 || !may_have_keyword(ident) {
        return None;
    }
    // Lowercase copy, word ranges and the words run together, all on the stack.
    let mut buf = [0u8; 64];
    for (d, c) in buf.iter_mut().zip(ident) {
        *d = c.to_ascii_lowercase();
    }
    let lower = &buf[..ident.len()];
    let mut ranges = [(0usize, 0usize); 64];
    let n = word_ranges(ident, &mut ranges);
    let words = &ranges[..n];
    let word = |i: usize| &lower[words[i].0..words[i].1];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|x| x == needle);
    // `pass` counts as the last word, right before the operator as in noseyparker's rules
    // (`backend_pass =`, not `needless_pass_by_value =`), or in detect-secrets' DENYLIST
    // compounds `db_pass`, `database_pass`, `key_pass` (`db_pass_secure`).
    let pass_ok = |i: usize| {
        i + 1 == n
            || i.checked_sub(1)
                .is_some_and(|j| matches!(word(j), b"db" | b"database" | b"key"))
    };
    let hit = (0..n).rev().find(|&i| {
        KEYWORDS
            .iter()
            .any(|k| find(word(i), k.as_bytes()).is_some())
            || WORD_KEYWORDS
                .iter()
                .any(|k| word(i) == k.as_bytes() && (*k != "pass" || pass_ok(i)))
    })?;
    let not_after = |w: &[u8]| -> bool {
        let w = w.strip_suffix(b"s").filter(|s| !s.is_empty()).unwrap_or(w);
        NOT_SECRET_AFTER.iter().any(|x| x.as_bytes() == w)
    };
    let not_before = |w: &[u8]| NOT_SECRET_BEFORE.iter().any(|x| x.as_bytes() == w);
    // The keyword may be glued to its neighbours inside one word (`keyword`, `pubkey`).
    let kw = word(hit);
    let (before, after) = KEYWORDS
        .iter()
        .find_map(|k| find(kw, k.as_bytes()).map(|i| (&kw[..i], &kw[i + k.len()..])))
        .unwrap_or((&[], &[]));
    let mut cbuf = [0u8; 64];
    let mut clen = 0;
    for &(s, e) in words {
        cbuf[clen..clen + (e - s)].copy_from_slice(&lower[s..e]);
        clen += e - s;
    }
    let compact = &cbuf[..clen];
    // `private_key_id`, `api_key_id`: the id of a credential named by detect-secrets'
    // DENYLIST (a Google service-account file's `private_key_id`, reported as the tuning
    // corpus asserts); other keywords followed by `id` name an identifier.
    let key_compound = DENYLIST[..9]
        .iter()
        .any(|d| find(compact, d.as_bytes()).is_some());
    let excluded_after = |i: usize| not_after(word(i)) && !(key_compound && word(i) == b"id");
    if (hit + 1..n).any(excluded_after)
        || (!after.is_empty() && not_after(after))
        || hit.checked_sub(1).is_some_and(|i| not_before(word(i)))
        || (!before.is_empty() && not_before(before))
    {
        return None;
    }
    let denylisted = DENYLIST
        .iter()
        .any(|d| find(compact, d.as_bytes()).is_some())
        || (0..n).any(|i| word(i) == b"pass" && pass_ok(i));
    Some(denylisted)
}

/// Cheap pre-check for [`classify`] (no allocation): whether `ident` contains one of
/// [`KEYWORDS`] or [`WORD_KEYWORDS`] anywhere, ignoring ASCII case.
fn may_have_keyword(ident: &[u8]) -> bool {
    // Every keyword starts with one of these prefixes (`pass` covers password, passwd,
    // passphrase; `cred` credential and creds).
    #[inline]
    fn at(rest: &[u8], word: &[u8]) -> bool {
        rest.len() >= word.len()
            && rest
                .iter()
                .zip(word)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
    }
    (0..ident.len()).any(|i| {
        let rest = &ident[i..];
        match rest[0].to_ascii_lowercase() {
            b'k' => at(rest, b"key"),
            b't' => at(rest, b"token"),
            b's' => at(rest, b"secret"),
            b'p' => at(rest, b"pass") || at(rest, b"pwd"),
            b'c' => at(rest, b"cred"),
            b'a' => at(rest, b"auth"),
            _ => false,
        }
    })
}

/// Byte ranges of the words of an identifier, split at `_`, `-`, `.`, letter/digit changes
/// and camel-case humps (`credentialsId` → `credentials`, `Id`; `AUTO_SESSION_PASSWORD` →
/// `AUTO`, `SESSION`, `PASSWORD`), written to `out`; returns how many.
fn word_ranges(ident: &[u8], out: &mut [(usize, usize); 64]) -> usize {
    let mut n = 0;
    let mut start = None;
    for (i, &c) in ident.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if let Some(s) = start.take() {
                out[n] = (s, i);
                n += 1;
            }
            continue;
        }
        let hump = i.checked_sub(1).map(|j| ident[j]).is_some_and(|p| {
            p.is_ascii_alphanumeric()
                && ((p.is_ascii_lowercase() && c.is_ascii_uppercase())
                    || (p.is_ascii_uppercase()
                        && c.is_ascii_uppercase()
                        && ident.get(i + 1).is_some_and(u8::is_ascii_lowercase)))
        });
        match start {
            Some(s) if hump => {
                out[n] = (s, i);
                n += 1;
                start = Some(i);
            }
            None => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out[n] = (s, ident.len());
        n += 1;
    }
    n
}

/// Most spaces or tabs between an identifier, its operator and its value (aligned
/// columns: `password        => 'x'`).
const MAX_PAD: usize = 32;

#[inline]
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

#[inline]
fn is_quote(b: u8) -> bool {
    matches!(b, b'"' | b'\'' | b'`')
}

/// Start of the identifier that ends at `end` (a run of `[A-Za-z0-9_.-]`, at most 64
/// bytes).
fn ident_start(bytes: &[u8], end: usize) -> usize {
    let mut j = end;
    while j > 0 && end - j < 64 && is_ident_byte(bytes[j - 1]) {
        j -= 1;
    }
    j
}

/// The identifier before an operator starting at `op`: spaces, an optional closing quote
/// (then the matching opening quote must precede the name), the name; or, in a typed
/// declaration (`var apiToken string = …`, `string apiToken = …` is the plain case), the
/// name before one type word. Returns `(start, end, quoted, denylisted)` for a name that
/// [`classify`] accepts; names glued to a path (`'/forgot-password' =>`) are skipped.
fn ident_before(bytes: &[u8], op: usize) -> Option<(usize, usize, bool, bool)> {
    // Types precede `=` (`var apiToken string = …`); before `:` a second word is prose.
    let typed_ok = bytes.get(op).is_some_and(|&b| b != b':') || bytes.get(op + 1) == Some(&b'=');
    let mut j = op;
    while j > 0 && op - j < MAX_PAD && matches!(bytes[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    let q = (j > 0 && matches!(bytes[j - 1], b'"' | b'\'')).then(|| bytes[j - 1]);
    if q.is_some() {
        j -= 1;
    }
    let end = j;
    let start = ident_start(bytes, end);
    if start == end {
        return None;
    }
    let before = start.checked_sub(1).map(|i| bytes[i]);
    if matches!(before, Some(b'/' | b'\\')) {
        return None;
    }
    if let Some(q) = q {
        if before != Some(q) {
            return None;
        }
        return classify(&bytes[start..end]).map(|d| (start, end, true, d));
    }
    if let Some(d) = classify(&bytes[start..end]) {
        return Some((start, end, false, d));
    }
    if typed_ok && matches!(before, Some(b' ' | b'\t')) {
        // Typed declaration: `<name> <type> =`, the type a word of at most 20 bytes.
        let ty = &bytes[start..end];
        if ty.len() <= 20 && ty.iter().all(u8::is_ascii_alphanumeric) {
            let mut k = start - 1;
            while k > 0 && start - k < 3 && matches!(bytes[k - 1], b' ' | b'\t') {
                k -= 1;
            }
            let s2 = ident_start(bytes, k);
            let glued = s2
                .checked_sub(1)
                .is_some_and(|i| !matches!(bytes[i], b' ' | b'\t' | b'\n' | b'(' | b'{' | b'$'));
            if s2 < k && !glued {
                return classify(&bytes[s2..k]).map(|d| (s2, k, false, d));
            }
        }
    }
    None
}

/// The `value` attribute of an XML element whose `key` or `name` attribute names a
/// credential (.NET `appSettings`: `<add key="DbPassword" value="…"/>`; gitleaks'
/// template list has it as `xml - attribute`, noseyparker `np.generic.9`): `value`
/// before the operator at `op`, and earlier in the same tag `key="…"` or `name="…"`
/// with a name that [`classify`] accepts. Returns as [`ident_before`] does.
fn attribute_pair(bytes: &[u8], op: usize) -> Option<(usize, usize, bool, bool)> {
    if bytes.get(op) != Some(&b'=') || op < 5 {
        return None;
    }
    let id_s = op - 5;
    if !bytes[id_s..op].eq_ignore_ascii_case(b"value")
        || !id_s
            .checked_sub(1)
            .is_some_and(|i| bytes[i].is_ascii_whitespace())
    {
        return None;
    }
    let from = id_s.saturating_sub(512);
    let tag = from + memchr::memrchr(b'<', &bytes[from..id_s])?;
    let inside = &bytes[tag..id_s];
    if inside.contains(&b'>') {
        return None;
    }
    for attr in [&b"key="[..], b"name="] {
        let Some(i) = inside
            .windows(attr.len())
            .position(|w| w.eq_ignore_ascii_case(attr))
        else {
            continue;
        };
        let open = tag + i + attr.len();
        if !inside
            .get(i.checked_sub(1)?)
            .is_some_and(u8::is_ascii_whitespace)
        {
            continue;
        }
        let (s, e) = quoted_at(bytes, open).filter(|_| matches!(bytes[open], b'"' | b'\''))?;
        return classify(&bytes[s..e]).map(|d| (id_s, op, false, d));
    }
    None
}

/// A quoted literal opening at `open` (a quote byte): its inner range, on one line and
/// at most [`validate::GENERIC_MAX_LEN`] bytes.
fn quoted_at(bytes: &[u8], open: usize) -> Option<(usize, usize)> {
    let q = *bytes.get(open)?;
    let s = open + 1;
    let limit = (s + validate::GENERIC_MAX_LEN + 1).min(bytes.len());
    let len = memchr::memchr2(q, b'\n', bytes.get(s..limit)?)?;
    (bytes[s + len] == q).then_some((s, s + len))
}

/// A literal wrapped once more in the other quote (`'"951bc…"'`, a Java string inside a
/// Gradle string) is read inside; one that merely starts with a quote (`"'$VAR'"`, shell
/// quoting) is not a literal.
fn unwrap_nested(bytes: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let v = &bytes[s..e];
    match v.first() {
        Some(&q @ (b'"' | b'\'')) => {
            (v.len() >= 3 && v[v.len() - 1] == q).then_some((s + 1, e - 1))
        }
        _ => Some((s, e)),
    }
}

/// Whether a closing quote at `close` ends the expression: end of text, whitespace or
/// `,;:)]}>/\`, not a concatenation (`"application:" + appKey`) or a method call.
fn literal_ends(bytes: &[u8], close: usize) -> bool {
    bytes.get(close + 1).is_none_or(|&b| {
        b.is_ascii_whitespace()
            || matches!(
                b,
                b',' | b';' | b':' | b')' | b']' | b'}' | b'>' | b'/' | b'\\'
            )
    })
}

/// End of an unquoted value starting at `s`: the first whitespace, quote, `,` or `;`, or
/// an escaped `\n`/`\r`/`\t` (a config file inside a JSON string), then without closing
/// brackets that do not close one inside the value (`f(token=abc)`). `None` when it runs
/// past [`validate::GENERIC_MAX_LEN`] bytes.
fn unquoted_end(bytes: &[u8], s: usize) -> Option<usize> {
    let mut e = s;
    while e < bytes.len() {
        let b = bytes[e];
        if b.is_ascii_whitespace()
            || is_quote(b)
            || matches!(b, b',' | b';')
            || (b == b'\\' && matches!(bytes.get(e + 1), Some(b'n' | b'r' | b't')))
        {
            break;
        }
        e += 1;
        if e - s > validate::GENERIC_MAX_LEN {
            return None;
        }
    }
    // Trailing closers without an opener in the value, of any kind and in any order
    // (`f(token=abc)]`).
    while e > s {
        let v = &bytes[s..e];
        let last = bytes[e - 1];
        let unbalanced = [(b'(', b')'), (b'[', b']'), (b'{', b'}'), (b'<', b'>')]
            .iter()
            .any(|&(open, close)| {
                last == close
                    && v.iter().filter(|&&b| b == close).count()
                        > v.iter().filter(|&&b| b == open).count()
            });
        if !unbalanced {
            break;
        }
        e -= 1;
    }
    Some(e)
}

/// Whether a username assignment comes first, as noseyparker's `np.generic.4` requires for
/// an unquoted password (`user = Aladdin` / `password = open_sesame`; `User ID=b2b;
/// Password=…`): earlier on the same line, or on the nearest earlier line that is not
/// blank or a comment (`#`, `//`, `;`), within two such lines.
fn user_before(bytes: &[u8], ident: usize) -> bool {
    let has_user = |line: &[u8]| -> bool {
        let lower: Vec<u8> = line.iter().map(u8::to_ascii_lowercase).collect();
        lower
            .windows(4)
            .position(|w| w == b"user")
            .is_some_and(|i| lower[i..].iter().any(|&b| b == b'=' || b == b':'))
    };
    let line_start = memchr::memrchr(b'\n', &bytes[..ident]).map_or(0, |i| i + 1);
    if has_user(&bytes[line_start..ident]) {
        return true;
    }
    let mut end = line_start;
    let mut seen = 0;
    while end > 0 && seen < 2 && ident - end < 512 {
        let prev_end = end - 1;
        let start = memchr::memrchr(b'\n', &bytes[..prev_end]).map_or(0, |i| i + 1);
        let line = bytes[start..prev_end].trim_ascii();
        end = start;
        if line.is_empty()
            || line.starts_with(b"#")
            || line.starts_with(b"//")
            || line.starts_with(b";")
        {
            continue;
        }
        if has_user(line) {
            return true;
        }
        seen += 1;
    }
    false
}

/// The finding for a value `s..e` assigned to an identifier of class `denylisted`
/// (see [`classify`]), if either rule accepts it.
/// `password_gate`: the password rule may apply (a literal that ends its expression, or
/// an unquoted value after a username).
fn judge(
    text: &str,
    s: usize,
    e: usize,
    denylisted: bool,
    password_gate: bool,
) -> Option<(usize, usize)> {
    let v = text.get(s..e)?;
    if validate::generic_value_ok(v) {
        return Some((s, e));
    }
    (denylisted && password_gate && validate::password_value_ok(v) && !names_itself(text, s, v))
        .then_some((s, e))
}

/// [`judge`] for an unquoted value after a username (noseyparker `np.generic.4`), where a
/// `snake_case` password (`open_sesame`) is a password, not a name.
fn judge_after_user(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    let v = text.get(s..e)?;
    (validate::generic_value_ok(v) || validate::password_literal_ok(v, true)).then_some((s, e))
}

/// Whether a literal repeats the name it is assigned to (`Fault::Pass => "Pass"`,
/// `GoogleApiKey => "google_api_key"`): letters and digits compared without case, over the
/// 64 bytes before the literal.
fn names_itself(text: &str, s: usize, v: &str) -> bool {
    let norm = |x: &[u8]| -> Vec<u8> {
        x.iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(u8::to_ascii_lowercase)
            .collect()
    };
    let want = norm(v.as_bytes());
    if want.is_empty() {
        return false;
    }
    let before = &text.as_bytes()[s.saturating_sub(64)..s];
    // The last identifier-like run before the literal.
    let end = before
        .iter()
        .rposition(|b| b.is_ascii_alphanumeric())
        .map_or(0, |i| i + 1);
    let start = before[..end]
        .iter()
        .rposition(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        .map_or(0, |i| i + 1);
    norm(&before[start..end]) == want
}

/// Generic `identifier <op> value` secrets, found from operator bytes: every `:`, `=` and
/// `,` (`memchr3`).
///
/// - Assignments `=`, `:`, `:=`, `::=`, `:::=`, `?=`, `.=`, `=>` (gitleaks' templates for
///   INI, YAML, JSON, Go, PHP, Makefiles, Logstash), the identifier optionally quoted and
///   optionally followed by one type word (`var apiToken string = …`).
/// - Comparisons `==`, `===`, `!=`, `!==` with a quoted literal on either side
///   (detect-secrets' `FOLLOWED_BY_EQUAL_SIGNS` and `PRECEDED_BY_EQUAL_COMPARISON_SIGNS`).
/// - A quoted name, `,` and a quoted value (`System.setProperty("API_TOKEN", "…")`).
///
/// A value is a quoted literal (to its closing quote on the same line; one wrapped again
/// in the other quote is read inside) or runs to whitespace, a quote, `,`, `;` or an
/// escaped line break. In a URL query (`?key=…&`) it ends at `&` or `#`. A quote right
/// after the operator that closes the string the identifier sits in
/// (`passwordLabel:"Password:"`) opens nothing. Paths (`::`, `://`) and `<=`/`>=` are
/// skipped.
pub(crate) fn scan_assignments(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut done_until = 0;
    let push = |out: &mut Vec<Finding>, (s, e): (usize, usize), done: &mut usize| {
        out.push(Finding {
            detector: Detector::GenericSecret,
            start: s,
            end: e,
        });
        *done = e;
    };
    for op in memchr::memchr3_iter(b':', b'=', b',', bytes) {
        if op < done_until {
            continue;
        }
        let b = bytes[op];
        let prev = op.checked_sub(1).map(|i| bytes[i]);
        let next = bytes.get(op + 1).copied();
        if b == b',' {
            if let Some(f) = comma_pair(text, op) {
                push(out, f, &mut done_until);
            }
            continue;
        }
        if b == b':' {
            // `::`, `:=` and `:::=` are read at their `=`; `::` alone is a path, `://` a URL.
            if matches!(next, Some(b':' | b'=' | b'/')) || prev == Some(b':') {
                continue;
            }
        }
        // The operator's extent: `=` with `:`, `?`, `.`, `!`, `=` before it and `=`/`>`
        // after it; each `=` run is read once, at its first `=`.
        let (mut op_start, mut op_end) = (op, op + 1);
        if b == b'=' {
            if prev == Some(b'=') {
                continue;
            }
            while op_start > 0
                && op - op_start < 3
                && matches!(bytes[op_start - 1], b':' | b'?' | b'.' | b'!')
            {
                op_start -= 1;
            }
            while op_end < n && op_end - op < 3 && matches!(bytes[op_end], b'=' | b'>') {
                op_end += 1;
            }
            if matches!(prev, Some(b'<' | b'>')) {
                continue;
            }
        }
        let op_text = &bytes[op_start..op_end];
        let comparison = matches!(op_text, b"==" | b"===" | b"!=" | b"!==");
        if !comparison
            && !matches!(
                op_text,
                b"=" | b":" | b":=" | b"::=" | b":::=" | b"?=" | b".=" | b"=>"
            )
        {
            continue;
        }
        if comparison {
            if let Some(f) = literal_before_comparison(text, op_start, op_end) {
                push(out, f, &mut done_until);
                continue;
            }
        }
        let Some((id_s, _, id_quoted, denylisted)) =
            ident_before(bytes, op_start).or_else(|| attribute_pair(bytes, op_start))
        else {
            continue;
        };
        let in_query = id_s > 0 && matches!(bytes[id_s - 1], b'?' | b'&');
        let mut s = op_end;
        while s < n && s - op_end < MAX_PAD && matches!(bytes[s], b' ' | b'\t') {
            s += 1;
        }
        let Some(&first) = bytes.get(s) else {
            continue;
        };
        if is_quote(first) {
            // A quote that closes the string around the identifier opens nothing.
            let in_string = !id_quoted && id_s > 0 && bytes[id_s - 1] == first;
            if in_string {
                continue;
            }
            let Some((qs, qe)) = quoted_at(bytes, s) else {
                continue;
            };
            let Some((vs, ve)) = unwrap_nested(bytes, qs, qe) else {
                continue;
            };
            let v = &bytes[vs..ve];
            let found = if v.iter().any(u8::is_ascii_whitespace) {
                // High-entropy rule: the first word; password rule: the whole literal.
                let word_end = unquoted_end(bytes, vs).filter(|&e| e <= ve);
                word_end
                    .and_then(|we| validate::generic_value_ok(&text[vs..we]).then_some((vs, we)))
                    .or_else(|| {
                        (denylisted
                            && literal_ends(bytes, qe)
                            && validate::password_value_ok(&text[vs..ve]))
                        .then_some((vs, ve))
                    })
            } else {
                judge(text, vs, ve, denylisted, literal_ends(bytes, qe))
            };
            if let Some(f) = found {
                push(out, f, &mut done_until);
            }
            continue;
        }
        if comparison {
            continue; // comparisons need a literal
        }
        let Some(mut e) = unquoted_end(bytes, s) else {
            continue;
        };
        if in_query {
            e = memchr::memchr2(b'&', b'#', &bytes[s..e]).map_or(e, |i| s + i);
        }
        // Code, not a value: a call, generic type or index (`make_key()`, `Mutex<Vec<u8>>`,
        // `keys[0]`), a parenthesised or borrowed expression, a method chain.
        if e == s || code_shaped(&bytes[s..e]) {
            continue;
        }
        // An unquoted password has no brackets (`request.form["password"]` is code).
        let gate = denylisted
            && !bytes[s..e].iter().any(|b| matches!(b, b'(' | b'['))
            && user_before(bytes, id_s);
        let found = if gate {
            judge_after_user(text, s, e)
        } else {
            judge(text, s, e, denylisted, false)
        };
        if let Some(f) = found {
            push(out, f, &mut done_until);
        }
    }
}

/// XML elements named like a credential (gitleaks' `xml - element multiline` template:
/// `<apiToken>\n    value\n</apiToken>`): every `>` that closes an opening tag
/// `<name>`, then the element's text (surrounding whitespace trimmed, no markup) and the
/// matching closing tag.
pub(crate) fn scan_xml_elements(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let mut done_until = 0;
    for gt in memchr::memchr_iter(b'>', bytes) {
        if gt < done_until || gt == 0 {
            continue;
        }
        let name_s = ident_start(bytes, gt);
        if name_s == gt || name_s == 0 || bytes[name_s - 1] != b'<' {
            continue;
        }
        let name = &bytes[name_s..gt];
        let Some(denylisted) = classify(name) else {
            continue;
        };
        let limit = (gt + 1 + validate::GENERIC_MAX_LEN).min(bytes.len());
        let Some(lt) = memchr::memchr(b'<', &bytes[gt + 1..limit]).map(|i| gt + 1 + i) else {
            continue;
        };
        let closing = bytes.get(lt + 1) == Some(&b'/')
            && bytes.get(lt + 2..lt + 2 + name.len()) == Some(name)
            && bytes.get(lt + 2 + name.len()) == Some(&b'>');
        if !closing {
            continue;
        }
        let mut s = gt + 1;
        let mut e = lt;
        while s < e && bytes[s].is_ascii_whitespace() {
            s += 1;
        }
        while e > s && bytes[e - 1].is_ascii_whitespace() {
            e -= 1;
        }
        if bytes[s..e].iter().any(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some((s, e)) = judge(text, s, e, denylisted, true) {
            out.push(Finding {
                detector: Detector::GenericSecret,
                start: s,
                end: e,
            });
            done_until = e;
        }
    }
}

/// The password argument (0-based `index`) of a .NET credential constructor call whose
/// `(` ends at `open_end` (Microsoft docs: `NetworkCredential(userName, password[,
/// domain])`, index 1; `DirectoryEntry(path, username, password)`, index 2; noseyparker
/// `np.generic.7`, `np.generic.8`): the arguments must be string literals (quotes `"`/`'`, separated by `,` and
/// whitespace); the password passes [`validate::password_value_ok`] or the high-entropy
/// check.
pub(crate) fn dotnet_credential(
    text: &str,
    open_end: usize,
    index: usize,
) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut k = open_end;
    let mut args = Vec::new();
    loop {
        while k < bytes.len() && k - open_end < 512 && bytes[k].is_ascii_whitespace() {
            k += 1;
        }
        if !matches!(bytes.get(k), Some(b'"' | b'\'')) {
            return None;
        }
        let (s, e) = quoted_at(bytes, k)?;
        args.push((s, e));
        k = e + 1;
        while k < bytes.len() && matches!(bytes[k], b' ' | b'\t') {
            k += 1;
        }
        match bytes.get(k) {
            Some(b',') => k += 1,
            Some(b')') => break,
            _ => return None,
        }
        if args.len() > 4 {
            return None;
        }
    }
    let &(s, e) = args.get(index)?;
    if bytes[s..e].iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    judge(text, s, e, true, true)
}

/// `password "…";` (detect-secrets `FOLLOWED_BY_QUOTES_AND_SEMICOLON`, C-like
/// declarations and configuration directives): every `;` right after a closing quote, the
/// literal back to its opening quote on the same line, whitespace, and before it a name on
/// detect-secrets' `DENYLIST` (password rule and high-entropy rule both apply).
pub(crate) fn scan_quoted_statements(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    for semi in memchr::memchr_iter(b';', bytes) {
        let Some(close) = semi.checked_sub(1) else {
            continue;
        };
        let q = bytes[close];
        if !matches!(q, b'"' | b'\'') {
            continue;
        }
        let line_start = memchr::memrchr(b'\n', &bytes[..close]).map_or(0, |i| i + 1);
        let from = close
            .saturating_sub(validate::GENERIC_MAX_LEN)
            .max(line_start);
        let Some(open) = memchr::memrchr(q, &bytes[from..close]).map(|i| from + i) else {
            continue;
        };
        let mut j = open;
        while j > line_start && open - j < MAX_PAD && matches!(bytes[j - 1], b' ' | b'\t') {
            j -= 1;
        }
        if j == open {
            continue; // `name"…"` or `= "…"`: not this form
        }
        let id_s = ident_start(bytes, j);
        if id_s == j
            || id_s
                .checked_sub(1)
                .is_some_and(|i| !bytes[i].is_ascii_whitespace())
        {
            continue;
        }
        if classify(&bytes[id_s..j]) != Some(true) {
            continue;
        }
        if let Some((s, e)) = judge(text, open + 1, close, true, true) {
            out.push(Finding {
                detector: Detector::GenericSecret,
                start: s,
                end: e,
            });
        }
    }
}

/// Whether an unquoted value is code: it starts with `(`, `[`, `<` or `&`, or with a name
/// followed by `(`, `<`, `[` or `!(`/`![`/`!{` (a call, a generic type, an index, a
/// macro), or it holds `()` or `?.`.
fn code_shaped(v: &[u8]) -> bool {
    let name = v
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'$'))
        .count();
    matches!(v.first(), Some(b'(' | b'[' | b'<' | b'&'))
        || (name > 0 && matches!(v.get(name), Some(b'(' | b'<' | b'[')))
        || (name > 0
            && v.get(name) == Some(&b'!')
            && matches!(v.get(name + 1), Some(b'(' | b'[' | b'{')))
        || v.windows(2).any(|w| w == b"()" || w == b"?.")
}

/// `"<literal>" == <identifier>` (detect-secrets `PRECEDED_BY_EQUAL_COMPARISON_SIGNS`):
/// a quoted literal ending just before the comparison `op_start..op_end`, and a
/// credential name after it.
fn literal_before_comparison(text: &str, op_start: usize, op_end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut j = op_start;
    while j > 0 && op_start - j < 3 && matches!(bytes[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    let q = *bytes.get(j.checked_sub(1)?)?;
    if !is_quote(q) {
        return None;
    }
    let close = j - 1;
    let line_start = memchr::memrchr(b'\n', &bytes[..close]).map_or(0, |i| i + 1);
    let from = close
        .saturating_sub(validate::GENERIC_MAX_LEN)
        .max(line_start);
    let open = from + memchr::memrchr(q, &bytes[from..close])?;
    let mut k = op_end;
    while k < bytes.len() && k - op_end < 3 && matches!(bytes[k], b' ' | b'\t') {
        k += 1;
    }
    let mut id_e = k;
    while id_e < bytes.len() && id_e - k < 64 && is_ident_byte(bytes[id_e]) {
        id_e += 1;
    }
    let denylisted = classify(&bytes[k..id_e])?;
    judge(text, open + 1, close, denylisted, true)
}

/// `"NAME", "value"` around the comma at `comma` (gitleaks' comma operator:
/// `System.setProperty("API_TOKEN", "…")`, `GetEnvOrDefault("api_token", "…")`).
fn comma_pair(text: &str, comma: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut j = comma;
    while j > 0 && comma - j < 3 && matches!(bytes[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    let q = *bytes.get(j.checked_sub(1)?)?;
    if !matches!(q, b'"' | b'\'') {
        return None;
    }
    let id_e = j - 1;
    let id_s = ident_start(bytes, id_e);
    if id_s == id_e || id_s == 0 || bytes[id_s - 1] != q {
        return None;
    }
    let denylisted = classify(&bytes[id_s..id_e])?;
    let mut s = comma + 1;
    while s < bytes.len() && s - comma < 4 && matches!(bytes[s], b' ' | b'\t') {
        s += 1;
    }
    if !matches!(bytes.get(s), Some(b'"' | b'\'')) {
        return None;
    }
    let (qs, qe) = quoted_at(bytes, s)?;
    let (vs, ve) = unwrap_nested(bytes, qs, qe)?;
    if !literal_ends(bytes, qe) || bytes[vs..ve].iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    // The password rule only for a call's first two arguments (`f("PASSWORD", "…")`): in a
    // list of strings (`["pass", "auth"]`) a short literal is no password.
    let mut k = id_s - 1;
    while k > 0 && matches!(bytes[k - 1], b' ' | b'\t') {
        k -= 1;
    }
    let call = k > 0 && bytes[k - 1] == b'(';
    judge(text, vs, ve, denylisted, call)
}

/// `the password is '…'` in prose (noseyparker `np.generic.11`–`np.generic.14`): the
/// word `password` (or `Password`), then within the same sentence (80 bytes, no `.`, `:`,
/// `=` or line break; one quoted phrase such as a user name may come between) the word
/// `is` and a quoted literal without whitespace that passes
/// [`validate::password_value_ok`]. `is_at` is the offset of ` is ` followed by a quote
/// (found by the scanner with `memmem`, rarer than the word `password`).
pub(crate) fn password_prose(text: &str, is_at: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let from = is_at.saturating_sub(80);
    let stop =
        memchr::memrchr3(b'.', b':', b'\n', &bytes[from..is_at]).map_or(from, |i| from + i + 1);
    let sentence = &bytes[stop..is_at];
    if sentence.contains(&b'=') {
        return None;
    }
    let word = sentence
        .windows(8)
        .rposition(|w| w.eq_ignore_ascii_case(b"password"))?;
    let at = stop + word;
    if at > 0 && bytes[at - 1].is_ascii_alphanumeric()
        || bytes
            .get(at + 8)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    // At most one quoted phrase between (`for user 'postgres' is 'admin'`).
    if bytes[at..is_at].iter().filter(|&&b| is_quote(b)).count() > 2 {
        return None;
    }
    let s = is_at + 4;
    let (vs, ve) = quoted_at(bytes, s)?;
    let v = text.get(vs..ve)?;
    let ends = bytes.get(ve + 1).is_none_or(|&c| {
        c.is_ascii_whitespace() || matches!(c, b'.' | b',' | b';' | b')' | b'!' | b'"')
    });
    let ok = ends && !v.bytes().any(|c| c.is_ascii_whitespace()) && validate::password_value_ok(v);
    ok.then_some((vs, ve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(classify(b"api_token"), Some(false));
        assert_eq!(classify(b"DB_PASSWORD"), Some(true));
        assert_eq!(classify(b"db_pass"), Some(true));
        assert_eq!(classify(b"compass"), None);
        assert_eq!(classify(b"user_auth"), Some(false));
        assert_eq!(classify(b"author"), None);
        assert_eq!(classify(b"credentialsId"), None);
        assert_eq!(classify(b"kms_key_id"), None);
        assert_eq!(classify(b"public_key"), None);
        assert_eq!(classify(b"publicToken"), None);
        assert_eq!(classify(b"csrf-token"), None);
        assert_eq!(classify(b"secret_name"), None);
        assert_eq!(classify(b"keyword"), None);
        assert_eq!(classify(b"passwordLabel"), None);
        assert_eq!(classify(b"dev.credentials.url"), None);
        assert_eq!(classify(b"aws_secret_access_key"), Some(true));
        let mut r = [(0, 0); 64];
        assert_eq!(word_ranges(b"credentialsId", &mut r), 2);
        assert_eq!(r[..2], [(0, 11), (11, 13)]);
    }
}
