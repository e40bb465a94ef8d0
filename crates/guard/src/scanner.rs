//! The [`Scanner`]: candidate search (literal anchors, `@`, `:`/`=`/`,`, digit runs) plus
//! validation.
//!
//! A scan makes a few linear passes over the text, each cheap on clean prose:
//!
//! 1. an Aho-Corasick automaton (SIMD "Teddy" prefilter) over the literal anchors of the
//!    prefix-based detectors (`AKIA`, `ghp_`, `sk-`, `xox`, `AIza`, `-----BEGIN`, `eyJ`,
//!    `Bearer`);
//! 2. `memchr3` for `:`, `=` and `,`, the operators of [`Detector::GenericSecret`], and
//!    `memchr` for `>` (XML elements) and `;` (`password "…";`); `memmem` for ` is '` / ` is "` (`the password is
//!    '…'`) and the two .NET credential constructors;
//! 3. `memchr` for `@` (e-mail addresses);
//! 4. a vectorisable skip to the next ASCII digit, for IBANs, card and phone numbers.
//!
//! Only at these candidate positions does an anchored `regex` or a hand-written scan run,
//! followed by the detector's validator (checksum, entropy, decoding; phone numbers are
//! confirmed by libphonenumber's metadata in `phone.rs`). Overlapping
//! candidates are then resolved in favour of the more specific detector
//! (`Detector::specificity`).

use crate::detector::{Detector, Finding};
use crate::generic;
use crate::phone;
use crate::validate::{self, is_word};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt;

/// Errors raised while building a [`Scanner`] or a [`Policy`](crate::Policy).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A built-in regular expression failed to compile. This indicates a bug in this crate
    /// (every pattern is compiled by the unit tests); `name` identifies the pattern.
    #[error("built-in pattern `{name}` failed to compile: {source}")]
    Pattern {
        /// Internal name of the pattern.
        name: &'static str,
        /// The compile error from the `regex` crate.
        #[source]
        source: regex::Error,
    },
    /// The literal-anchor automaton could not be built (also a bug in this crate).
    #[error("anchor automaton failed to build: {0}")]
    Anchors(#[from] aho_corasick::BuildError),
    /// A policy listed more than one [`Rule`](crate::Rule) for the same detector.
    #[error("more than one rule for detector `{0}`")]
    DuplicateRule(Detector),
    /// A detector name did not match any [`Detector::as_str`] value.
    #[error("unknown detector `{0}`")]
    UnknownDetector(String),
}

/// What a literal anchor hit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Aws,
    Github,
    SkDash,
    Slack,
    SlackWebhook,
    Google,
    PemBegin,
    Jwt,
    Bearer,
}

/// Literal anchors per detector.
fn anchors_for(d: Detector) -> &'static [(&'static str, Anchor)] {
    match d {
        Detector::AwsAccessKey => &[
            ("AKIA", Anchor::Aws),
            ("ASIA", Anchor::Aws),
            ("ABIA", Anchor::Aws),
            ("ACCA", Anchor::Aws),
            ("A3T", Anchor::Aws),
        ],
        Detector::GithubToken => &[
            ("ghp_", Anchor::Github),
            ("gho_", Anchor::Github),
            ("ghu_", Anchor::Github),
            ("ghs_", Anchor::Github),
            ("ghr_", Anchor::Github),
            ("github_pat_", Anchor::Github),
        ],
        // OpenAI and Anthropic share the `sk-` anchor; the hit is routed by what follows.
        Detector::OpenaiKey | Detector::AnthropicKey => &[("sk-", Anchor::SkDash)],
        Detector::SlackToken => &[
            ("xox", Anchor::Slack),
            ("xapp-", Anchor::Slack),
            ("hooks.slack.com/", Anchor::SlackWebhook),
        ],
        Detector::GoogleApiKey => &[("AIza", Anchor::Google)],
        Detector::PrivateKey => &[("-----BEGIN", Anchor::PemBegin)],
        Detector::Jwt => &[("eyJ", Anchor::Jwt)],
        Detector::GenericSecret => &[
            ("bearer", Anchor::Bearer),
            ("Bearer", Anchor::Bearer),
            ("BEARER", Anchor::Bearer),
        ],
        Detector::Email | Detector::Phone | Detector::CreditCard | Detector::Iban => &[],
    }
}

/// The compiled patterns. Each is anchored with `^` and run on `&text[candidate..]`, so a
/// search costs at most the length of the token it is checking.
#[derive(Clone)]
struct Patterns {
    aws: Regex,
    github: Regex,
    openai: Regex,
    openai_legacy: Regex,
    anthropic: Regex,
    slack: Regex,
    slack_webhook: Regex,
    google: Regex,
    pem_header: Regex,
    pem_footer: Regex,
    jwt: Regex,
    email_domain: Regex,
    bearer: Regex,
}

impl Patterns {
    fn compile() -> Result<Patterns, GuardError> {
        fn re(name: &'static str, pattern: &str) -> Result<Regex, GuardError> {
            Regex::new(pattern).map_err(|source| GuardError::Pattern { name, source })
        }
        Ok(Patterns {
            aws: re("aws", r"^(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}")?,
            github: re(
                "github",
                concat!(
                    r"^(?:ghr_[A-Za-z0-9]{76}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",
                    r"|ghs_[0-9]{1,20}_eyJ[A-Za-z0-9_-]{2,8192}\.eyJ[A-Za-z0-9_-]{2,16384}\.[A-Za-z0-9_-]{0,2048})",
                ),
            )?,
            // Real keys embed `T3BlbkFJ` (base64 of "OpenAI"), as gitleaks, trufflehog and
            // detect-secrets require.
            openai: re(
                "openai",
                r"^sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{8,200}T3BlbkFJ[A-Za-z0-9_-]{8,200}",
            )?,
            openai_legacy: re("openai_legacy", r"^sk-[A-Za-z0-9]{48}")?,
            // `sk-ant-<kind><version>-`, 93 characters and the `AA` suffix (gitleaks,
            // kingfisher `anthropic-api-key`).
            anthropic: re(
                "anthropic",
                r"^sk-ant-[a-z]{2,10}[0-9]{2,4}-[A-Za-z0-9_-]{93}AA",
            )?,
            // Slack token types (Slack API docs; gitleaks' slack rules): configuration
            // access and refresh tokens (`xoxe.xoxp-1-…`, `xoxe-1-…`, 100+ characters),
            // app-level tokens (`xapp-1-A…-<digits>-<hex>`), and bot/user/legacy tokens
            // (`xox[abposr]-`, an optional `<digit>-` version, one to four numeric ids of
            // 5+ digits, then a secret of 8+ alphanumerics).
            slack: re(
                "slack",
                concat!(
                    r"^(?:xoxe\.xox[bp]-[0-9]-[A-Za-z0-9]{100,250}",
                    r"|xoxe-[0-9]-[A-Za-z0-9]{100,250}",
                    r"|xapp-[0-9]-[A-Za-z0-9]{8,20}-[0-9]{8,20}(?:-[A-Za-z0-9]{8,128})?",
                    r"|xox[abposre]-(?:[0-9]-)?(?:[0-9]{5,20}-){1,4}[A-Za-z0-9]{8,64})",
                ),
            )?,
            // Incoming webhooks and workflow triggers: the path after the host.
            slack_webhook: re(
                "slack_webhook",
                r"^hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{20,120}",
            )?,
            google: re("google", r"^AIza[A-Za-z0-9_-]{35}")?,
            pem_header: re(
                "pem_header",
                r"^-----BEGIN (?:[A-Z0-9]{2,10} ){0,2}PRIVATE KEY(?: BLOCK)?-----",
            )?,
            pem_footer: re(
                "pem_footer",
                r"^-----END (?:[A-Z0-9]{2,10} ){0,2}PRIVATE KEY(?: BLOCK)?-----",
            )?,
            jwt: re(
                "jwt",
                r"^eyJ[A-Za-z0-9_-]{2,8192}\.eyJ[A-Za-z0-9_-]{2,16384}(?:\.[A-Za-z0-9_-]{0,2048})?",
            )?,
            // The domain after the `@` (unbounded: counted repetitions of Unicode classes
            // compile too big; lengths are checked after the match).
            email_domain: re(
                "email_domain",
                concat!(
                    r"^(?:[\p{L}0-9][\p{L}\p{M}\p{N}-]*\.)+",
                    r"(?:xn--[A-Za-z0-9-]+|[A-Za-z]+|[\p{L}\p{M}]+)",
                ),
            )?,
            bearer: re("bearer", r"^(?i:bearer)[ \t]{1,4}")?,
        })
    }
}

/// A compiled set of detectors. Build once and reuse: construction compiles about a dozen
/// regular expressions and an Aho-Corasick automaton (well under a millisecond each);
/// scanning allocates only the result vector. `Scanner` is `Send + Sync` and cheap to
/// share behind an `Arc` (cloning is cheap too: compiled patterns are reference-counted).
#[derive(Clone)]
pub struct Scanner {
    enabled: [bool; Detector::COUNT],
    anchors: Option<AhoCorasick>,
    anchor_kinds: Vec<Anchor>,
    re: Patterns,
    is_quote: [memchr::memmem::Finder<'static>; 2],
    dotnet: [memchr::memmem::Finder<'static>; 2],
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("detectors", &self.detectors())
            .finish_non_exhaustive()
    }
}

/// Largest distance (bytes) between a PEM header and its footer.
const PEM_MAX_BLOCK: usize = 32 * 1024;
/// Minimum digits in a numeric run before card and phone checks run (the shortest phone
/// number has 7; cards have 13 or more).
const MIN_NUMERIC_DIGITS: usize = phone::MIN_DIGITS;

impl Scanner {
    /// Builds a scanner for the given detectors (duplicates are ignored; an empty slice
    /// gives a scanner that finds nothing).
    ///
    /// # Errors
    /// [`GuardError::Pattern`] or [`GuardError::Anchors`] if a built-in pattern fails to
    /// compile — a bug in this crate that the unit tests rule out.
    pub fn new(detectors: &[Detector]) -> Result<Scanner, GuardError> {
        let mut enabled = [false; Detector::COUNT];
        for d in detectors {
            enabled[d.index()] = true;
        }
        let mut literals: Vec<&'static str> = Vec::new();
        let mut anchor_kinds = Vec::new();
        let mut push = |lit: &'static str, kind: Anchor| {
            if !literals.contains(&lit) {
                literals.push(lit);
                anchor_kinds.push(kind);
            }
        };
        for d in Detector::ALL {
            if enabled[d.index()] {
                for &(lit, kind) in anchors_for(d) {
                    push(lit, kind);
                }
            }
        }
        let anchors = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)?,
            )
        };
        Ok(Scanner {
            enabled,
            anchors,
            anchor_kinds,
            re: Patterns::compile()?,
            is_quote: [
                memchr::memmem::Finder::new(" is '").into_owned(),
                memchr::memmem::Finder::new(" is \"").into_owned(),
            ],
            dotnet: [
                memchr::memmem::Finder::new("NetworkCredential(").into_owned(),
                memchr::memmem::Finder::new("DirectoryEntry(").into_owned(),
            ],
        })
    }

    /// A scanner with every detector in [`Detector::ALL`].
    ///
    /// # Errors
    /// As [`Scanner::new`].
    pub fn all() -> Result<Scanner, GuardError> {
        Scanner::new(&Detector::ALL)
    }

    /// The enabled detectors, in [`Detector::ALL`] order.
    pub fn detectors(&self) -> Vec<Detector> {
        Detector::ALL
            .into_iter()
            .filter(|d| self.enabled[d.index()])
            .collect()
    }

    #[inline]
    fn on(&self, d: Detector) -> bool {
        self.enabled[d.index()]
    }

    /// Scans `text` and returns the findings sorted by `start`, pairwise non-overlapping.
    /// Where candidates of two detectors overlap, the more specific one is kept (e.g. an
    /// OpenAI key inside `OPENAI_API_KEY=sk-…` is reported as
    /// [`Detector::OpenaiKey`], not [`Detector::GenericSecret`]). Never panics.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut cands = Vec::new();
        if let Some(ac) = &self.anchors {
            // Leftmost-first search, restarted one byte after each hit so that anchors
            // overlapping a previous hit are seen too (`sk-----BEGIN`). This is ~10x
            // faster than aho-corasick's overlapping iterator, which cannot use the SIMD
            // prefilter as effectively.
            let mut pos = 0;
            while let Some(m) = ac.find(aho_corasick::Input::new(text).range(pos..)) {
                let kind = self.anchor_kinds[m.pattern().as_usize()];
                self.check_anchor(kind, text, m.start(), &mut cands);
                pos = m.start() + 1;
            }
        }
        if self.on(Detector::GenericSecret) {
            generic::scan_assignments(text, &mut cands);
            generic::scan_xml_elements(text, &mut cands);
            generic::scan_quoted_statements(text, &mut cands);
            // .NET credential constructors: `NetworkCredential(user, password)`,
            // `DirectoryEntry(path, user, password)`.
            for (finder, index) in self.dotnet.iter().zip([1, 2]) {
                for at in finder.find_iter(text.as_bytes()) {
                    let open_end = at + finder.needle().len();
                    if let Some((s, e)) = generic::dotnet_credential(text, open_end, index) {
                        cands.push(Finding {
                            detector: Detector::GenericSecret,
                            start: s,
                            end: e,
                        });
                    }
                }
            }
            // `password is '…'` in prose: every ` is '` / ` is "` (`memmem`).
            for finder in &self.is_quote {
                for at in finder.find_iter(text.as_bytes()) {
                    if let Some((s, e)) = generic::password_prose(text, at) {
                        cands.push(Finding {
                            detector: Detector::GenericSecret,
                            start: s,
                            end: e,
                        });
                    }
                }
            }
        }
        if self.on(Detector::Email) {
            self.scan_emails(text, &mut cands);
        }
        if self.on(Detector::CreditCard) || self.on(Detector::Phone) || self.on(Detector::Iban) {
            self.scan_numeric(text, &mut cands);
        }
        resolve(cands)
    }

    fn check_anchor(&self, kind: Anchor, text: &str, at: usize, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let prev = at.checked_sub(1).map(|i| bytes[i]);
        let rest = &text[at..];
        // Vendor tokens and JWTs must not continue a longer word.
        let token_start = prev.is_none_or(|b| !is_word(b) && b != b'-');
        let mut push = |d: Detector, s: usize, e: usize| {
            out.push(Finding {
                detector: d,
                start: s,
                end: e,
            });
        };
        // Every pattern is anchored (`^`) and has bounded repetitions, so `find` (lazy DFA,
        // no capture groups) costs at most the length of the token it is checking.
        let find = |re: &Regex| re.find(rest).map(|m| m.as_str());
        match kind {
            Anchor::Aws if token_start => {
                if let Some(tok) = find(&self.re.aws) {
                    let end = at + tok.len();
                    if ends_token(bytes, end, b"") && validate::aws_key_id_ok(tok) {
                        push(Detector::AwsAccessKey, at, end);
                    }
                }
            }
            Anchor::Github if token_start => {
                if let Some(tok) = find(&self.re.github) {
                    let end = at + tok.len();
                    let body = tok
                        .strip_prefix("github_pat_")
                        .unwrap_or_else(|| tok.get(4..).unwrap_or_default());
                    // `ghs_<app id>_<JWT>` installation tokens: the JWT must decode.
                    let jwt_ok = body
                        .split_once('_')
                        .filter(|(_, jwt)| jwt.contains('.'))
                        .is_none_or(|(_, jwt)| validate::jwt_ok(jwt));
                    if ends_token(bytes, end, b"") && jwt_ok && validate::token_body_ok(body) {
                        push(Detector::GithubToken, at, end);
                    }
                }
            }
            Anchor::SkDash if token_start => {
                let (detector, re, body_from) = if rest.starts_with("sk-ant-") {
                    // `sk-ant-<kind><version>-<body>`: the body follows the third hyphen.
                    let body_from = |tok: &str| {
                        tok.match_indices('-')
                            .nth(2)
                            .map_or(tok.len(), |(i, _)| i + 1)
                    };
                    (
                        Detector::AnthropicKey,
                        &self.re.anthropic,
                        body_from as fn(&str) -> usize,
                    )
                } else {
                    let body_from = |tok: &str| {
                        ["sk-proj-", "sk-svcacct-", "sk-admin-"]
                            .iter()
                            .find(|p| tok.starts_with(*p))
                            .map_or(3, |p| p.len())
                    };
                    (
                        Detector::OpenaiKey,
                        &self.re.openai,
                        body_from as fn(&str) -> usize,
                    )
                };
                if !self.on(detector) {
                    return;
                }
                if let Some(tok) = find(re) {
                    let end = at + tok.len();
                    let body = tok.get(body_from(tok)..).unwrap_or_default();
                    // Anthropic keys are checked by length and suffix; OpenAI bodies must
                    // mix cases and digits as random base62 does.
                    let shape_ok =
                        detector == Detector::AnthropicKey || validate::mixed_case_and_digits(body);
                    if ends_token(bytes, end, b"-") && shape_ok && validate::token_body_ok(body) {
                        push(detector, at, end);
                        return;
                    }
                }
                // Legacy OpenAI user keys: `sk-` and exactly 48 base62 characters, no
                // marker (noseyparker `np.openai.1`, kingfisher `kingfisher.openai.1`).
                // Without the marker the body must look random: mixed classes, entropy,
                // and no run of six ascending characters (`abcdefgh` in a typed example).
                if detector == Detector::OpenaiKey {
                    if let Some(tok) = find(&self.re.openai_legacy) {
                        let end = at + tok.len();
                        let body = &tok[3..];
                        if ends_token(bytes, end, b"-")
                            && validate::mixed_case_and_digits(body)
                            && validate::token_body_ok(body)
                            && !validate::has_ascending_run(body, 6)
                        {
                            push(detector, at, end);
                        }
                    }
                }
            }
            Anchor::Slack if token_start && prev != Some(b'.') => {
                if let Some((s, e)) = self.slack_token(text, at) {
                    push(Detector::SlackToken, s, e);
                }
            }
            Anchor::SlackWebhook => {
                if let Some((s, e)) = self.slack_webhook(text, at) {
                    push(Detector::SlackToken, s, e);
                }
            }
            Anchor::Google if token_start => {
                if let Some(tok) = find(&self.re.google) {
                    let end = at + tok.len();
                    if ends_token(bytes, end, b"-") && validate::token_body_ok(&tok[4..]) {
                        push(Detector::GoogleApiKey, at, end);
                    }
                }
            }
            Anchor::PemBegin => {
                if let Some(tok) = find(&self.re.pem_header) {
                    if let Some(end) = self.pem_block_end(text, at + tok.len()) {
                        push(Detector::PrivateKey, at, end);
                    }
                }
            }
            Anchor::Jwt if token_start && prev != Some(b'.') => {
                if let Some(tok) = find(&self.re.jwt) {
                    let end = at + tok.len();
                    // A fourth segment means JWE or something else, not a JWS.
                    let fourth = bytes.get(end) == Some(&b'.')
                        && bytes.get(end + 1).is_some_and(|&b| is_word(b) || b == b'-');
                    if !fourth && ends_token(bytes, end, b"-") && validate::jwt_ok(tok) {
                        push(Detector::Jwt, at, end);
                    }
                }
            }
            Anchor::Bearer if prev.is_none_or(|b| !b.is_ascii_alphanumeric()) => {
                if let Some(head) = find(&self.re.bearer) {
                    let s = at + head.len();
                    let mut e = s;
                    while e < bytes.len()
                        && e - s <= validate::GENERIC_MAX_LEN
                        && (bytes[e].is_ascii_alphanumeric()
                            || matches!(bytes[e], b'.' | b'_' | b'~' | b'+' | b'/' | b'-'))
                    {
                        e += 1;
                    }
                    while e < bytes.len() && bytes[e] == b'=' && e - s <= validate::GENERIC_MAX_LEN
                    {
                        e += 1;
                    }
                    if ends_token(bytes, e, b"") && validate::generic_value_ok(&text[s..e]) {
                        push(Detector::GenericSecret, s, e);
                    }
                }
            }
            _ => {}
        }
    }

    /// A Slack token starting at `at` (an `xox`/`xapp-` anchor): the pattern, then a secret
    /// segment holding a letter (or two distinct numeric ids) and entropy >= 3 of the body
    /// or of its secret segment. Returns the byte range.
    fn slack_token(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        let bytes = text.as_bytes();
        let tok = self.re.slack.find(&text[at..])?.as_str();
        let end = at + tok.len();
        let body = tok.get(5..).unwrap_or_default();
        let segments: Vec<&str> = body.split(['-', '.']).collect();
        // The secret segment is random alphanumerics (so it holds a letter), or the token
        // has two distinct long numeric ids (`xoxb-23984754863-2348975623112`).
        let secret = segments.last().copied().unwrap_or_default();
        let numeric_ids = segments
            .iter()
            .filter(|g| g.len() >= 5 && g.bytes().all(|b| b.is_ascii_digit()))
            .count();
        let distinct = segments.windows(2).any(|w| w[0] != w[1]);
        let ok = ends_token(bytes, end, b"-")
            && (secret.bytes().any(|b| b.is_ascii_alphabetic()) || (numeric_ids >= 2 && distinct))
            && (validate::token_body_ok(body) || validate::token_body_ok(secret));
        ok.then_some((at, end))
    }

    /// A Slack webhook URL whose host starts at `at`, with its scheme (`https://`,
    /// `http://` or a bare `//`) when one precedes it. Returns the byte range.
    fn slack_webhook(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        let tok = self.re.slack_webhook.find(&text[at..])?.as_str();
        let end = at + tok.len();
        let start = ["https://", "http://", "//"]
            .iter()
            .find(|p| text[..at].ends_with(*p))
            .map_or(at, |p| at - p.len());
        ends_token(text.as_bytes(), end, b"").then_some((start, end))
    }

    /// End of a PEM private-key block whose header ends at `header_end`, or `None` when no
    /// key material follows (a header alone, as in parser code, is not a key).
    ///
    /// With a footer within [`PEM_MAX_BLOCK`] bytes, the block ends with the footer if the
    /// content between looks like a PEM body ([`pem_body_ok`]; this admits PEM headers such
    /// as `Proc-Type:`, escaped `\n` and comment prefixes). Otherwise the block is the
    /// header plus the base64 that follows (characters `[A-Za-z0-9+/=]`, line breaks and
    /// escaped `\n`), which must hold at least [`PEM_MIN_BODY`] base64 characters.
    fn pem_block_end(&self, text: &str, header_end: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let limit = (header_end + PEM_MAX_BLOCK).min(bytes.len());
        let finder = memchr::memmem::Finder::new(b"-----END");
        let mut from = header_end;
        let mut footer = None;
        while let Some(off) = finder.find(&bytes[from..limit]) {
            let pos = from + off;
            if let Some(m) = self.re.pem_footer.find(&text[pos..]) {
                if pem_body_ok(&bytes[header_end..pos]) {
                    return Some(pos + m.end());
                }
                footer = Some((pos, pos + m.end()));
                break;
            }
            from = pos + 1;
        }
        if let Some(end) = pem_text_body_end(bytes, header_end, footer) {
            return Some(end);
        }
        let mut end = header_end;
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n' | b'\\')
            {
                end += 1;
            } else {
                break;
            }
        }
        // Do not end on a line break or a dangling escape.
        while end > header_end && matches!(bytes[end - 1], b'\r' | b'\n' | b'\\') {
            end -= 1;
        }
        if end >= header_end + 2 && &bytes[end - 2..end] == b"\\n" {
            end -= 2;
        }
        pem_body_ok(&bytes[header_end..end]).then_some(end)
    }

    /// E-mail candidates: every `@`, extended backwards over the local part.
    fn scan_emails(&self, text: &str, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let mut done_until = 0;
        for at in memchr::memchr_iter(b'@', bytes) {
            if at < done_until || at == 0 {
                continue;
            }
            // Walk back over the local part (`is_local_char`): RFC 5322 atext plus
            // Latin-script letters (RFC 6531 `jürgen@…`). Other scripts end it, so that
            // `メールはtanaka@…` (no space in CJK text) yields `tanaka@…`; so does the end
            // of the previous address (`a@example.com|b@example.org`).
            let mut s = at;
            let mut too_long = false;
            // The local part keeps to one script class: the one of the character before
            // the `@` (ASCII punctuation goes with either).
            let class = text[..at].chars().next_back().map(script_class);
            for (count, (i, c)) in text[..at].char_indices().rev().enumerate() {
                let same = c.is_ascii_punctuation() || Some(script_class(c)) == class;
                if i < done_until || !is_local_char(c) || !same {
                    break;
                }
                if count == 64 {
                    too_long = true;
                    break;
                }
                s = i;
            }
            if let Some(q) = quoted_local_start(bytes, at) {
                s = q; // RFC 5322 quoted string: `"quoted local part"@example.org`
            } else {
                if too_long || s > 0 && bytes[s - 1] == b'@' {
                    continue; // local part longer than 64 characters, or `a@b@c`
                }
                let Some(start) = unquoted_local_start(bytes, s, at) else {
                    continue;
                };
                s = start;
            }
            let Some(m) = self.re.email_domain.find(&text[at + 1..]) else {
                continue;
            };
            let end = at + 1 + m.end();
            let domain = m.as_str();
            if !domain_shape_ok(domain) {
                continue;
            }
            // RFC 5891 §5.4: an A-label (`xn--…`) must decode (Punycode, RFC 3492) to a
            // valid U-label; checked with the `idna` crate (UTS #46 processing), so
            // `me@xn--0.tld` is not an address.
            let a_label = domain
                .as_bytes()
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"xn--"));
            if a_label && idna::domain_to_unicode(domain).1.is_err() {
                continue;
            }
            // RFC 5891 §4.2.3.1: `--` in the third and fourth positions is reserved for
            // A-labels (`xn--`).
            if domain.split('.').any(|l| {
                l.get(2..4) == Some("--")
                    && !l.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("xn"))
            }) {
                continue;
            }
            let tld = domain.rsplit('.').next().unwrap_or_default();
            // The address ends where its TLD's script does (`…@example.co.jpまで`).
            let tld_class = tld.chars().next_back().map(script_class);
            let next_ok = text[end..].chars().next().is_none_or(|c| {
                !(c == '@'
                    || c == '-'
                    || c == '_'
                    || (c.is_alphanumeric() && Some(script_class(c)) == tld_class))
            });
            if next_ok && !is_file_extension(tld) {
                out.push(Finding {
                    detector: Detector::Email,
                    start: s,
                    end,
                });
                done_until = end;
            }
        }
    }

    /// Digit-driven candidates: IBANs (two uppercase letters before a digit pair), card
    /// numbers and phone numbers (numeric runs with at least [`MIN_NUMERIC_DIGITS`] digits).
    fn scan_numeric(&self, text: &str, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let n = bytes.len();
        let mut i = 0;
        loop {
            i = next_digit(bytes, i);
            if i >= n {
                break;
            }
            if self.on(Detector::Iban)
                && i >= 2
                && bytes[i - 2].is_ascii_uppercase()
                && bytes[i - 1].is_ascii_uppercase()
                && (i == 2 || !is_word(bytes[i - 3]))
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
            {
                if let Some(end) = iban_at(bytes, text, i - 2) {
                    out.push(Finding {
                        detector: Detector::Iban,
                        start: i - 2,
                        end,
                    });
                    i = end;
                    continue;
                }
            }
            let (start, end, digits) = numeric_run(bytes, i);
            if digits >= MIN_NUMERIC_DIGITS {
                let before = out.len();
                if self.on(Detector::CreditCard) {
                    find_cards(text, i, end, out);
                }
                // A run that holds a card number is not searched for phone numbers (the
                // card would win the overlap anyway).
                if self.on(Detector::Phone) && out.len() == before {
                    self.find_phones(text, start, end, out);
                }
            }
            i = end.max(i + 1);
        }
    }

    /// Phone numbers in the numeric run `start..end` (`start` may be a `+` or `(`): the
    /// whole run, else the longest stretches of its digit groups that start after a
    /// space (`415-555-0132 415-555-0133` holds two), each confirmed by
    /// [`phone::is_phone`] (libphonenumber metadata).
    fn find_phones(&self, text: &str, start: usize, end: usize, out: &mut Vec<Finding>) {
        /// Most digit groups tried in one candidate (`+44 (0) 20 7946 0958` has five).
        const MAX_GROUPS: usize = 8;
        let bytes = text.as_bytes();
        // Digits glued to a word by `-` (`xox-12345678901-pt…`) belong to an identifier;
        // digits continuing IBAN print groups (`NL91 ABNA 0417 1643 01`) to an account.
        let glued_before = start > 0
            && (is_word(bytes[start - 1])
                || (bytes[start - 1] == b'-'
                    && start > 1
                    && bytes[start - 2].is_ascii_alphanumeric()));
        let glued_after = bytes.get(end) == Some(&b'-')
            && bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric);
        if glued_before || glued_after || after_iban_groups(bytes, start) {
            return;
        }
        // Longer runs are tables of numbers, not phone numbers (and would cost a
        // libphonenumber parse per window).
        const MAX_RUN_GROUPS: usize = 16;
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut j = start;
        while j < end {
            while j < end && !bytes[j].is_ascii_digit() {
                j += 1;
            }
            let s = j;
            while j < end && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j > s {
                groups.push((s, j));
            }
            if groups.len() > MAX_RUN_GROUPS {
                return;
            }
        }
        let mut g = 0;
        while g < groups.len() {
            let s = if g == 0 {
                start
            } else {
                let gs = groups[g].0;
                if gs > 0 && matches!(bytes[gs - 1], b'+' | b'(') {
                    gs - 1
                } else {
                    gs
                }
            };
            let mut found = None;
            let last = (g + MAX_GROUPS - 1).min(groups.len() - 1);
            for h in (g..=last).rev() {
                let e = groups[h].1;
                let digits: usize = groups[g..=h].iter().map(|(a, b)| b - a).sum();
                if digits < phone::MIN_DIGITS {
                    break;
                }
                // Written numbers have at most two single-digit groups (`+33 1 …`,
                // `+44 (0) 20 …`, `1 415 …`).
                let singles = groups[g..=h].iter().filter(|(a, b)| b - a == 1).count();
                if digits <= phone::MAX_DIGITS
                    && singles <= 2
                    && numeric_bounds_ok(bytes, s, e)
                    && phone::is_phone(&text[s..e])
                {
                    found = Some((s, e, h));
                    break;
                }
            }
            if let Some((s, e, h)) = found {
                out.push(Finding {
                    detector: Detector::Phone,
                    start: s,
                    end: e,
                });
                g = h + 1;
            } else {
                g += 1;
            }
            // A new candidate starts only after whitespace (`(415) 555-0132` is one).
            while g < groups.len() && !bytes[groups[g - 1].1..groups[g].0].contains(&b' ') {
                g += 1;
            }
        }
    }
}

/// Whether `start` follows IBAN print groups: a country code and check digits (`NL91`),
/// then 4-character `[A-Z0-9]` groups, each followed by one space.
fn after_iban_groups(bytes: &[u8], start: usize) -> bool {
    let mut j = start;
    let mut groups = 0;
    while j >= 5 && bytes[j - 1] == b' ' {
        let g = &bytes[j - 5..j - 1];
        if !g
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            break;
        }
        groups += 1;
        j -= 5;
        let at_token = j == 0 || !is_word(bytes[j - 1]);
        if at_token
            && g[..2].iter().all(u8::is_ascii_uppercase)
            && g[2..].iter().all(u8::is_ascii_digit)
        {
            return groups >= 1;
        }
    }
    false
}

/// Most bytes of a written-out (non-base64) key body: a line or two of prose.
const PEM_TEXT_BODY_MAX: usize = 256;

/// End of a private-key block whose body is written out in words rather than base64, as
/// in detect-secrets' `PrivateKeyDetector` tests (`-----BEGIN RSA PRIVATE KEY-----` /
/// `super secret private key here` / `-----END RSA PRIVATE KEY-----`): detect-secrets
/// reports every private-key header, a key pasted with its body replaced or garbled is
/// still a key block. Required here: the header ends its line (a line break or an escaped
/// `\n` follows), the body (up to the footer, else the end of its line) is at most
/// [`PEM_TEXT_BODY_MAX`] bytes of text on at most two lines, and it holds two or more
/// words with letters. One-token bodies (`anything`, `xxx`, `***`, `...`, a short
/// base64 string) are placeholders, as in gitleaks' and secretlint's negatives; so are
/// bodies with `<…>` or `your`.
fn pem_text_body_end(
    bytes: &[u8],
    header_end: usize,
    footer: Option<(usize, usize)>,
) -> Option<usize> {
    let rest = &bytes[header_end..];
    // A line break: `\r\n`, `\n`, or their escaped forms inside a string literal.
    let brk = [&b"\\r\\n"[..], b"\\n", b"\r\n", b"\n"]
        .iter()
        .find(|p| rest.starts_with(p))
        .map_or(0, |p| p.len());
    if brk == 0 {
        return None;
    }
    let body_start = header_end + brk;
    let (body_end, end) = match footer {
        Some((fs, fe)) if fs >= body_start => (fs, fe),
        _ => {
            let line_end =
                memchr::memchr(b'\n', &bytes[body_start..]).map_or(bytes.len(), |i| body_start + i);
            (line_end, line_end)
        }
    };
    let body = bytes.get(body_start..body_end)?;
    if body.len() > PEM_TEXT_BODY_MAX
        || body
            .iter()
            .any(|&b| b.is_ascii_control() && !b.is_ascii_whitespace())
    {
        return None;
    }
    // Escaped line breaks (a key inside a JSON string) count as whitespace.
    let body = std::str::from_utf8(body)
        .ok()?
        .replace("\\r", " ")
        .replace("\\n", "\n")
        .to_ascii_lowercase();
    if body.contains('<') || body.contains("your") || body.matches('\n').count() > 2 {
        return None;
    }
    let words = body
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    // Trim a trailing line break off a body that runs to the end of its line.
    let mut end = end;
    while end > body_start && matches!(bytes[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    (words >= 2).then_some(end)
}

/// Minimum number of base64 characters in a PEM body (a 256-bit EC key has about 160).
const PEM_MIN_BODY: usize = 40;

/// Whether `body` (between a PEM header and footer) looks like key material: at least
/// [`PEM_MIN_BODY`] base64 characters in runs of 16 or more (PEM lines are 64 wide), and
/// at most one other non-whitespace byte per five such characters. That leaves room for
/// PEM headers (`Proc-Type: 4,ENCRYPTED`), escaped newlines, quotes and comment marks,
/// but not for prose or code between two unrelated header and footer strings.
fn pem_body_ok(body: &[u8]) -> bool {
    const MIN_RUN: usize = 16;
    let mut long = 0usize;
    let mut other = 0usize;
    let mut run = 0usize;
    for &b in body.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
            run += 1;
            continue;
        }
        if run >= MIN_RUN {
            long += run;
        } else {
            other += run;
        }
        run = 0;
        if !b.is_ascii_whitespace() {
            other += 1;
        }
    }
    long >= PEM_MIN_BODY && other * 5 <= long
}

/// Whether the token ending at `end` is complete: the next byte is not a word character
/// nor one of `extra`.
#[inline]
fn ends_token(bytes: &[u8], end: usize, extra: &[u8]) -> bool {
    bytes
        .get(end)
        .is_none_or(|&b| !(is_word(b) || extra.contains(&b)))
}

/// Start of a quoted local part ending just before the `@` at `at`: the opening `"` of a
/// quoted string of 1–64 ASCII bytes on one line (`\"` escapes a quote), not glued to
/// a preceding word, or `None`.
fn quoted_local_start(bytes: &[u8], at: usize) -> Option<usize> {
    if at < 3 || bytes[at - 1] != b'"' {
        return None;
    }
    let mut j = at - 1;
    while j > 0 && at - j <= 66 {
        j -= 1;
        match bytes[j] {
            b'\n' | b'\r' => return None,
            b'"' if j == 0 || bytes[j - 1] != b'\\' => {
                // Not glued to a word (`bad"quotes"@…` is not a quoted local part).
                let free = j == 0 || !is_word(bytes[j - 1]);
                return (free && j + 2 < at).then_some(j);
            }
            // Quoted strings are ASCII (RFC 5322 `qtext`); SMTPUTF8 does not extend them.
            b if !b.is_ascii() => return None,
            _ => {}
        }
    }
    None
}

/// RFC 1035 lengths on a matched domain: one to eight labels of at most 63 characters
/// that do not end with `-`, then a TLD of 2–24 letters or a punycode `xn--` label.
fn domain_shape_ok(domain: &str) -> bool {
    let Some((labels, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    let tld_len = tld.chars().count();
    let tld_ok = if tld.starts_with("xn--") {
        tld_len <= 63
    } else {
        (2..=24).contains(&tld_len)
    };
    let labels: Vec<&str> = labels.split('.').collect();
    tld_ok
        && labels.len() <= 8
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().count() <= 63 && !l.ends_with('-'))
}

/// Characters of an unquoted e-mail local part: RFC 5322 `atext` (ASCII letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~``) and `.`, except `# & / = ?`, plus non-ASCII letters, digits and
/// combining marks (RFC 6531 internationalized addresses; `UTF8-non-ascii` also admits
/// symbols and punctuation, which are not taken, so CJK punctuation such as `「`, `：` or
/// `、` ends an address). `# & / = ?` delimit the text an address is written in: the path,
/// query and fragment of a URL and its `name=value` pairs (WHATWG URL Standard,
/// `application/x-www-form-urlencoded`), and `key=value` assignments, so
/// `?email=jane@example.com` and `user/jane@example.com` yield `jane@example.com`.
fn is_local_char(c: char) -> bool {
    /// RFC 5322 `atext` symbols other than `# & / = ?`, and the dot of a dot-atom.
    const SYMBOLS: &[u8] = b".!$%'*+-^_`{|}~";
    c.is_ascii_alphanumeric()
        || (c.is_ascii() && SYMBOLS.contains(&(c as u8)))
        || (!c.is_ascii() && (c.is_alphanumeric() || is_combining_mark(c)))
}

/// Start of the unquoted local part whose characters ([`is_local_char`]) run from `s` to
/// the `@` at `at`, or `None` when there is none. RFC 5322 symbols that also mark up the
/// text around an address are read as that markup where they open the run:
/// - a `}` whose `{` is not in the run closes a template expression (`{{ user }}@…`,
///   `{% endif %}jane@…`): the local part starts after it;
/// - a run that holds a replacement field, `{` and a name of letters, digits, `_` or `.`
///   then `}` (`{user}`, `{0}`, `{}`: Python's `str.format`, .NET composite formatting,
///   `${USER}`, Jinja's `{{user}}`), is a template, not an address;
/// - a leading quote, Markdown code-span, emphasis, strikethrough or table-cell character
///   (`'`, `` ` ``, `*`, `~`, `|`: CommonMark, GitHub Flavored Markdown) or an opening brace
///   is not part of it, so `'jane@example.com'`, `` `jane@…` ``, `**jane@…**`, `|jane@…|`
///   and `{jane@…}` yield `jane@…` (and `*@example.com`, a wildcard, is no address);
/// - the rest is an RFC 5322 dot-atom: it neither starts nor ends with a dot nor doubles one.
fn unquoted_local_start(bytes: &[u8], mut s: usize, at: usize) -> Option<usize> {
    let from = s;
    let mut depth = 0usize;
    for (k, &b) in bytes[from..at].iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' if depth == 0 => s = from + k + 1,
            b'}' => depth -= 1,
            _ => {}
        }
    }
    let mut open = false;
    let field = bytes[s..at].iter().any(|&b| match b {
        b'{' => {
            open = true;
            false
        }
        b'}' => open,
        b'_' | b'.' => false,
        b => {
            open &= b.is_ascii_alphanumeric();
            false
        }
    });
    if field {
        return None;
    }
    while s < at && matches!(bytes[s], b'\'' | b'`' | b'*' | b'~' | b'|' | b'{') {
        s += 1;
    }
    let local = &bytes[s..at];
    let dot_atom = !local.is_empty()
        && !local.starts_with(b".")
        && !local.ends_with(b".")
        && !local.windows(2).any(|w| w == b"..");
    dot_atom.then_some(s)
}

/// Combining marks used inside words of Indic and other scripts (virama, vowel signs) and
/// the general combining diacritics: Unicode blocks U+0300–036F, U+0900–0DFF (Indic,
/// where marks and letters interleave), U+1AB0–1AFF, U+20D0–20FF.
fn is_combining_mark(c: char) -> bool {
    matches!(u32::from(c), 0x300..=0x36F | 0x900..=0xDFF | 0x1AB0..=0x1AFF | 0x20D0..=0x20FF)
}

/// 0 for ASCII and Latin-script letters, 1 for every other script: an address does not
/// switch between the two (`メールはtanaka@…` yields `tanaka@…`).
fn script_class(c: char) -> u8 {
    let latin = c.is_ascii() || matches!(u32::from(c), 0xC0..=0x24F | 0x1E00..=0x1EFF);
    u8::from(!latin)
}

/// Image-file extensions that look like TLDs in `name@2x.png`.
fn is_file_extension(tld: &str) -> bool {
    const EXT: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico"];
    EXT.iter().any(|e| tld.eq_ignore_ascii_case(e))
}

/// Index of the next ASCII digit at or after `i` (or `bytes.len()`). Skips 32-byte blocks
/// with a branch-free test that the compiler vectorises.
#[inline]
fn next_digit(bytes: &[u8], mut i: usize) -> usize {
    const BLOCK: usize = 32;
    while i + BLOCK <= bytes.len() {
        let block = &bytes[i..i + BLOCK];
        let hit = block
            .iter()
            .fold(0u8, |acc, &b| acc | u8::from(b.wrapping_sub(b'0') < 10));
        if hit != 0 {
            break;
        }
        i += BLOCK;
    }
    while i < bytes.len() && !bytes[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// The numeric run starting at digit `i`: digits joined by up to two separator characters
/// out of ` -.()/` (`555) 123-4567`, `415/666-7777`). Returns `(start, end, digit_count)`, where `start`
/// includes a leading `+` or `(`.
fn numeric_run(bytes: &[u8], i: usize) -> (usize, usize, usize) {
    let n = bytes.len();
    let mut start = i;
    if i > 0 && matches!(bytes[i - 1], b'+' | b'(') {
        start = i - 1;
    }
    let mut j = i;
    let mut digits = 0;
    let mut end;
    loop {
        while j < n && bytes[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
        end = j;
        let mut k = j;
        while k < n && k - j < 2 && matches!(bytes[k], b' ' | b'-' | b'.' | b'(' | b')' | b'/') {
            k += 1;
        }
        if k > j && k < n && bytes[k].is_ascii_digit() {
            j = k;
        } else {
            break;
        }
    }
    (start, end, digits)
}

/// Whether `s..e` is a whole number and not part of a longer token: not adjacent to word
/// characters, and not continued by `.`/`,`/`-` plus a digit (decimals, dates, IPs).
fn numeric_bounds_ok(bytes: &[u8], s: usize, e: usize) -> bool {
    let before_ok = match s.checked_sub(1).map(|i| bytes[i]) {
        None => true,
        Some(b) if is_word(b) || b == b'+' => false,
        Some(b'.' | b',' | b'-' | b'/') => !(s >= 2 && bytes[s - 2].is_ascii_digit()),
        Some(_) => true,
    };
    let after_ok = match bytes.get(e) {
        None => true,
        Some(&b) if is_word(b) => false,
        Some(b'.' | b',' | b'-' | b'/') => !bytes.get(e + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    };
    before_ok && after_ok
}

/// Card numbers inside the numeric run `i..end` (`i` is its first digit): sequences of
/// digit groups joined by one consistent single space or hyphen, 13–19 digits in total,
/// first group 4 digits (or a single contiguous group), other groups 3–6 digits; validated
/// by [`validate::card_number_ok`]. The longest valid sequence from each group wins.
fn find_cards(text: &str, i: usize, end: usize, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    // Digit groups and the single separator byte before each (0 = start of segment).
    let mut groups: Vec<(usize, usize, u8)> = Vec::new();
    let mut j = i;
    let mut sep = 0u8;
    while j < end {
        let s = j;
        while j < end && bytes[j].is_ascii_digit() {
            j += 1;
        }
        groups.push((s, j, sep));
        let k = j;
        while j < end && !bytes[j].is_ascii_digit() {
            j += 1;
        }
        sep = if j - k == 1 && matches!(bytes[k], b' ' | b'-') {
            bytes[k]
        } else {
            0
        };
    }
    let mut digits = String::with_capacity(19);
    let mut g = 0;
    while g < groups.len() {
        let mut best = None;
        let mut total = 0;
        let sep0 = groups.get(g + 1).map_or(0, |x| x.2);
        for (e, &(gs, ge, gsep)) in groups.iter().enumerate().skip(g) {
            if e > g && (gsep == 0 || gsep != sep0) {
                break;
            }
            let len = ge - gs;
            total += len;
            if total > 19 {
                break;
            }
            let shape_ok = if e == g {
                true
            } else {
                let first = groups[g].1 - groups[g].0;
                first == 4 && (3..=6).contains(&len)
            };
            if !shape_ok {
                break;
            }
            if total >= 13 {
                let (s, e_end) = (groups[g].0, ge);
                digits.clear();
                digits.extend(text[s..e_end].chars().filter(char::is_ascii_digit));
                // `-4386812962460287` is a negative integer, not a card.
                let minus = s > 0
                    && bytes[s - 1] == b'-'
                    && (s == 1 || !bytes[s - 2].is_ascii_alphanumeric());
                if validate::card_number_ok(&digits, e > g)
                    && !minus
                    && numeric_bounds_ok(bytes, s, e_end)
                    && !imei_context(bytes, s)
                {
                    best = Some((s, e_end, e));
                }
            }
        }
        if let Some((s, e_end, last)) = best {
            out.push(Finding {
                detector: Detector::CreditCard,
                start: s,
                end: e_end,
            });
            g = last + 1;
        } else {
            g += 1;
        }
    }
}

/// Whether an `IMEI` label precedes `s` within 16 bytes: IMEIs (3GPP TS 23.003) are 15
/// Luhn-checked digits and often start with `35` or `49`, so they would pass as cards.
fn imei_context(bytes: &[u8], s: usize) -> bool {
    let from = s.saturating_sub(16);
    bytes[from..s]
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"imei"))
}

/// IBAN starting at `p` (two uppercase letters, two digits): electronic format (a maximal
/// `[A-Z0-9]` run) or print format (groups of four separated by single spaces, the last
/// group 1–4 characters). In print format, trailing groups are dropped until the rest
/// validates, so `BE68 5390 0754 7034 2024` still yields the IBAN. Returns the end offset.
fn iban_at(bytes: &[u8], text: &str, p: usize) -> Option<usize> {
    let n = bytes.len();
    let up = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    if p + 4 < n && bytes[p + 4] == b' ' {
        let mut ends = Vec::new();
        let mut j = p + 4;
        while j < n && bytes[j] == b' ' && j - p < 42 {
            let mut k = j + 1;
            while k < n && k - (j + 1) < 4 && up(bytes[k]) {
                k += 1;
            }
            let len = k - (j + 1);
            if len == 0 {
                break;
            }
            ends.push(k);
            j = k;
            if len < 4 {
                break;
            }
        }
        let mut compact = String::with_capacity(34);
        for &end in ends.iter().rev() {
            if bytes.get(end).is_some_and(|&b| is_word(b)) {
                continue;
            }
            compact.clear();
            compact.extend(text[p..end].chars().filter(|c| *c != ' '));
            if validate::iban_ok(&compact) {
                return Some(end);
            }
        }
        None
    } else {
        let mut end = p;
        while end < n && up(bytes[end]) && end - p <= 34 {
            end += 1;
        }
        let ok = !bytes.get(end).is_some_and(|&b| is_word(b) || b == b'-')
            && validate::iban_ok(&text[p..end]);
        ok.then_some(end)
    }
}

/// Keeps the most specific of overlapping candidates and sorts by start offset.
fn resolve(mut cands: Vec<Finding>) -> Vec<Finding> {
    if cands.len() <= 1 {
        return cands;
    }
    cands.sort_by(|a, b| {
        a.detector
            .specificity()
            .cmp(&b.detector.specificity())
            .then(a.start.cmp(&b.start))
            .then(b.len().cmp(&a.len()))
    });
    let mut kept: BTreeMap<usize, Finding> = BTreeMap::new();
    for f in cands {
        let overlaps = kept
            .range(..f.end)
            .next_back()
            .is_some_and(|(_, k)| k.end > f.start);
        if !overlaps && f.start < f.end {
            kept.insert(f.start, f);
        }
    }
    kept.into_values().collect()
}

/// Replaces every finding in `text` with `[REDACTED:<detector>]` (e.g.
/// `[REDACTED:openai_key]`). `findings` need not be sorted; findings that overlap an
/// earlier one, fall outside `text` or do not lie on character boundaries are skipped,
/// so this never panics.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for f in sorted {
        if f.start < cursor
            || f.start >= f.end
            || f.end > text.len()
            || !text.is_char_boundary(f.start)
            || !text.is_char_boundary(f.end)
        {
            continue;
        }
        out.push_str(&text[cursor..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.detector.as_str());
        out.push(']');
        cursor = f.end;
    }
    out.push_str(&text[cursor..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(Patterns::compile().is_ok());
        assert!(Scanner::all().is_ok());
        assert!(Scanner::new(&[]).is_ok());
    }

    #[test]
    fn next_digit_finds_digits() {
        let s = "a".repeat(100) + "7";
        assert_eq!(next_digit(s.as_bytes(), 0), 100);
        assert_eq!(next_digit(b"abc", 0), 3);
    }

    #[test]
    fn numeric_run_shapes() {
        let s = b"call (555) 123-4567 now";
        assert_eq!(numeric_run(s, 6), (5, 19, 10));
    }

    #[test]
    fn resolve_prefers_specific() {
        let f = |d, s, e| Finding {
            detector: d,
            start: s,
            end: e,
        };
        let out = resolve(vec![
            f(Detector::GenericSecret, 0, 50),
            f(Detector::OpenaiKey, 5, 50),
            f(Detector::Email, 60, 70),
        ]);
        assert_eq!(
            out,
            vec![f(Detector::OpenaiKey, 5, 50), f(Detector::Email, 60, 70)]
        );
    }
}
