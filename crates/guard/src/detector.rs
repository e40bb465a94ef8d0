//! The detector catalogue: what each [`Detector`] looks for and where its rule comes from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether a detector finds credentials or personal data.
///
/// Serialized as `"secret"` / `"pii"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Credentials and key material: leaking one grants access to something.
    Secret,
    /// Personally identifiable or financial data about a person.
    Pii,
}

/// One kind of sensitive item that a [`Scanner`](crate::Scanner) can find.
///
/// Serialized in `snake_case` (`"email"`, `"credit_card"`, `"aws_access_key"`, …); the
/// same string is returned by [`Detector::as_str`] and used in redaction markers
/// (`[REDACTED:credit_card]`).
///
/// Every detector matches a *token* that is not glued to a neighbouring word character
/// (`[A-Za-z0-9_]`) unless stated otherwise. The rule of each variant and its source are
/// given below; [gitleaks](https://github.com/gitleaks/gitleaks/blob/master/config/gitleaks.toml)
/// is the general reference for the secret rules. "Entropy" is Shannon entropy of the
/// token body in bits per character.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// E-mail address, RFC 5321 shape with RFC 6531 internationalized parts: a local part
    /// of 1–64 characters, RFC 5322 `atext` (ASCII letters, digits and
    /// ``!$%'*+-^_`{|}~``; `o'brien@…`, `!def!xyz%abc@…`) and non-ASCII letters, digits
    /// and combining marks (`jürgen@…`, `葉士豪@…`) keeping to one script class
    /// (ASCII/Latin or other), as a dot-atom (no leading, trailing or doubled dot), or a
    /// quoted ASCII string (`"quoted local part"@…`); `@`; one to eight DNS labels (RFC
    /// 1035: letters, digits and inner hyphens in any script, at most 63 characters; `--`
    /// in positions 3–4 only in `xn--` A-labels, RFC 5891) and a TLD of 2–24 letters of one
    /// script or a punycode `xn--` label; a domain with `xn--` labels must convert to
    /// Unicode under IDNA (RFC 5891, UTS #46; the `idna` crate), so `me@xn--0.tld` is not
    /// reported. In free text the local part ends at what delimits the text around it: the
    /// `atext` symbols `# & / = ?` (URL paths, queries and fragments, `key=value`: WHATWG
    /// URL Standard), so `?email=jane@example.com` yields `jane@example.com`; a leading
    /// quote or Markdown character (`'`, `` ` ``, `*`, `~`, `|`, `{`) and a `}` closing
    /// an earlier template expression are left out, and a local part holding a
    /// replacement field (`{user}@…`, `${USER}@…`) is a template, not reported; CJK
    /// punctuation (`「`, `：`, `、`) and other scripts end it (`メールはsato.k@…`). The
    /// address ends where its TLD's script does, so `メールはsato.k@example.co.jpまで`
    /// yields `sato.k@example.co.jp`. `user@localhost` and `name@host` (no TLD) are not
    /// flagged, nor are image-file names such as `logo@2x.png` (TLDs `png`, `jpg`, `jpeg`,
    /// `gif`, `svg`, `webp`, `bmp`, `ico`, none of which is a delegated TLD). Limitations:
    /// an address whose local part holds `# & / = ?` is reported from the character after
    /// the last of them (`customer/department=shipping@…` as `shipping@…`); non-ASCII
    /// symbols in a local part (RFC 6531 admits them: `＠@fullwidth.at`) are not read.
    Email,
    /// Telephone number, confirmed with libphonenumber's metadata (the `phonenumber`
    /// crate, a Rust port of Google's libphonenumber). Candidates are digit runs of 7–18
    /// digits joined by ` -.()/`, optionally after `+`, split at spaces when the whole run
    /// is not one number; a candidate is reported when libphonenumber calls it *valid*
    /// (it lies in an assigned range) and either
    /// - it is international (`+CC …`, or after the `00`/`011` prefixes), or
    /// - it is in the national form of the US/Canada, UK, Germany, France, Israel, India,
    ///   Brazil, Japan or China (the digits of libphonenumber's national format), its digit
    ///   groups do not split one of libphonenumber's formatted groups (so an SSN-shaped
    ///   `078-05-1120` is not reported), a bare digit run is a mobile or NANP number, and
    ///   it is not a date or time.
    ///
    /// Numbers glued to identifiers (`xox-12345678901-…`), continuing IBAN print groups,
    /// with two or more `/`, or in runs of more than 16 digit groups are skipped.
    /// Limitation: full-width digits (`４１５…`) are not read.
    Phone,
    /// Payment card number (PAN), ISO/IEC 7812: 13–19 digits, written contiguously or in
    /// groups separated by one consistent space or hyphen (first group 4 digits, others
    /// 3–6), major industry identifier 2–6 (airlines/Mastercard 2-series, travel and
    /// entertainment, banking, merchandising) with a brand prefix and length that exist
    /// (Visa 4: 13/16/19; Mastercard 51–55, 2221–2720: 16; Amex 34/37: 15; Diners 300–305,
    /// 36, 38–39: 14–19; JCB 3528–3589, Discover/UnionPay/Maestro 6x, 50, 56–58, Mir
    /// 2200–2204: up to 19; UATP 1: 15), and a valid Luhn (mod-10) check digit (via the
    /// `luhn` crate).
    /// Contiguous runs of 17–19 digits, negative numbers (`-4111…`) and numbers labelled
    /// `IMEI` within the preceding 16 bytes (IMEIs are Luhn-checked too) are skipped.
    /// Limitation: one in ten 16-digit integers with a card prefix passes Luhn, so such
    /// constants in code (`check(6290184345309700, 778)`) are reported.
    CreditCard,
    /// International Bank Account Number, ISO 13616: uppercase country code, two check
    /// digits and a BBAN, in electronic (`GB82WEST12345698765432`) or print format (groups
    /// of four separated by single spaces). Validated with the `iban_validate` crate: the
    /// mod-97 checksum (ISO 7064) and the country's registered BBAN format must both pass.
    /// Pakistan (`PK`), missing from that crate's registry copy, is checked against the
    /// SWIFT registry entry (24 characters, BBAN `4!a16!c`) after the crate's mod-97 check.
    Iban,
    /// AWS access key id (AWS IAM docs, "Unique identifier prefixes"): `AKIA` (long-term
    /// key), `ASIA` (temporary STS key), `ABIA` (STS service bearer token) or `ACCA`
    /// (context-specific credential) or `A3T` plus one character (gitleaks' `aws-access-token`),
    /// followed by 16 uppercase alphanumerics. No entropy floor: detect-secrets'
    /// `AWSKeyDetector`, noseyparker and secretlint report fillers such as
    /// `AKIAZZZZZZZZZZZZZZZZ` and `AKIADEADBEEFDEADBEEF` too. Not reported: AWS's
    /// documentation example ids, ending in `EXAMPLE` (`AKIAIOSFODNN7EXAMPLE`; gitleaks'
    /// allowlist `.+EXAMPLE$`, secretlint's and AWS git-secrets' allowed list), and the
    /// mask `AKIAXXXXXXXXXXXXXXXX` (a body of `X` only). The other prefixes of the IAM
    /// table (`AIDA` users, `AROA` roles, `AGPA` groups, `ANPA` policies, `APKA` public
    /// keys, …) name resources, not credentials, and are not reported.
    AwsAccessKey,
    /// GitHub token (GitHub docs, "About authentication to GitHub" / token formats):
    /// `ghp_` (classic PAT), `gho_` (OAuth), `ghu_` (user-to-server), `ghs_`
    /// (server-to-server), `ghr_` (refresh) followed by 36 alphanumerics (refresh tokens
    /// also 76; installation tokens also `ghs_<app id>_<JWT>`, GitHub changelog
    /// 2026-04-24), or a
    /// fine-grained PAT `github_pat_` followed by 82 `[A-Za-z0-9_]`. Entropy >= 3.
    GithubToken,
    /// OpenAI API key: `sk-`, optionally `proj-`, `svcacct-` or `admin-`, then
    /// `[A-Za-z0-9_-]` around the `T3BlbkFJ` marker (base64 of "OpenAI", which every issued
    /// key embeds; gitleaks `openai-api-key`, detect-secrets), at least 8 characters on
    /// each side, mixing lowercase, uppercase and digits, entropy >= 3. Also legacy user
    /// keys without the marker: `sk-` and exactly 48 `[A-Za-z0-9]` (noseyparker
    /// `np.openai.1`, kingfisher `kingfisher.openai.1`) mixing cases and digits, with
    /// entropy >= 3 and no run of six ascending characters (`…abcdefgh…`, a typed
    /// example). Keys starting `sk-ant-` belong to [`Detector::AnthropicKey`].
    OpenaiKey,
    /// Anthropic API key: `sk-ant-<kind><version>-` (e.g. `sk-ant-api03-`,
    /// `sk-ant-admin01-`, `sk-ant-oat01-`) followed by exactly 93 `[A-Za-z0-9_-]` and the
    /// `AA` suffix (gitleaks `anthropic-api-key`, kingfisher), entropy >= 3.
    AnthropicKey,
    /// Slack token (Slack API docs, "Token types"; gitleaks' slack rules): bot, user,
    /// app-level, legacy and refresh tokens `xox[abposre]-` with an optional `<digit>-`
    /// version, one to four numeric ids of 5+ digits and a secret of 8+ alphanumerics that
    /// holds a letter (or two distinct numeric ids); app-level tokens
    /// `xapp-<digit>-<id>-<digits>[-<secret>]`; configuration tokens `xoxe.xoxp-<digit>-…`
    /// and refresh tokens `xoxe-<digit>-…` of 100+ characters; entropy >= 3 of the body or
    /// its secret segment. Also incoming-webhook and workflow URLs
    /// `[https://]hooks.slack.com/{services,workflows,triggers}/…` (the whole URL).
    SlackToken,
    /// Google API key (Google Cloud docs, "API keys"): `AIza` followed by exactly 35
    /// `[A-Za-z0-9_-]`, entropy >= 3.
    GoogleApiKey,
    /// PEM-encoded private key (RFC 7468 textual encoding; RFC 4880 for PGP):
    /// `-----BEGIN [RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP ]PRIVATE KEY[ BLOCK]-----`. The
    /// finding spans the whole block up to the matching `-----END …-----` line when one
    /// follows within 32 KiB; otherwise the header plus the base64 body that follows it.
    /// A body written out in words (detect-secrets' tests: `super secret private key
    /// here`, `yabba dabba doo`) also makes a key block when the header ends its line, the
    /// body is at most 256 bytes on at most two lines and holds two or more words;
    /// one-token bodies (`anything`, `xxx`, `***`, `...`, a short base64 string) and
    /// bodies with `<…>` or `your` are placeholders (gitleaks', secretlint's negatives).
    /// Public keys and certificates are not flagged.
    PrivateKey,
    /// JSON Web Token (RFC 7519) in JWS compact serialization (RFC 7515): base64url
    /// segments separated by `.`, the first two starting `eyJ` (base64url of `{"`). The
    /// header must decode to a JSON object containing `"alg"` and the payload to one
    /// starting `{`; the signature may be empty (`alg: none`) or, when the header says
    /// `"typ":"JWT"`, missing with its dot.
    Jwt,
    /// Credential found by the name it is assigned to. Two rules (see `generic.rs`):
    ///
    /// **High-entropy rule** (gitleaks `generic-api-key`): an identifier of at most 64
    /// `[A-Za-z0-9_.-]` containing `key`, `token`, `secret`, `password`, `passwd`, `pwd`,
    /// `credential` or `passphrase`, or the word `auth` or `creds`, or `pass` as the last
    /// word or in `db_pass`/`key_pass` (any case); an
    /// operator — assignment `=`, `:`, `:=`, `::=`, `:::=`, `?=`, `.=`, `=>`, the
    /// identifier optionally quoted and optionally followed by one type word
    /// (`var apiToken string = …`); a comparison `==`, `===`, `!=`, `!==` with a quoted
    /// literal on either side (detect-secrets); a quoted name, `,` and a quoted value
    /// (`System.setProperty("API_TOKEN", "…")`); an XML element `<apiToken>…</apiToken>`;
    /// or the `value` attribute of an element whose `key`/`name` attribute names a
    /// credential (`<add key="DbPassword" value="…"/>`) — and a value of 16–512 bytes. A
    /// quoted value runs to its closing quote on the same line (a literal wrapped again in
    /// the other quote is read inside); others end at whitespace, a quote, `,`, `;` or an
    /// escaped line break, without unbalanced closing brackets (and at `&`/`#` in a URL
    /// query); unquoted code (a call, generic type, index, macro or method chain:
    /// `Mutex<Vec<u8>>`, `quote!(…)`) is not a value. Also `Bearer <token>`. Only the value is
    /// reported. The value must have a Shannon entropy above 3.0 bits per character and
    /// mix at least two character classes. It must not be:
    /// - letters and `_.-` only (gitleaks' allowlist), or a slug or path whose
    ///   `-`/`_`/`.`/`/`/`:`-separated words are each all letters or all digits;
    /// - a placeholder (`example`, `changeme`, `xxxx`, `your_…`, `${VAR}`, `{{ var }}`,
    ///   `<token>`);
    /// - a path (`/etc/x`, `./x`, `dir/file.ext`), a URL, a host name or `host:port`, a
    ///   date or a call (`key: make_key()`);
    /// - a code identifier (`super::Win32::KEY`, `X509KeyUsageFlags`: identifier-shaped
    ///   with words averaging three or more characters, or a `SCREAMING_SNAKE` constant),
    ///   or a character-set constant (ten ascending characters, `0123456789abc…`).
    ///
    /// Identifiers that name something about a credential are skipped (gitleaks'
    /// allowlist): a keyword followed by `id`, `name`, `length`, `size`, `file`, `path`,
    /// `url`, `endpoint`, `version`, `pair`, `label`, `hint`, `variable`, … or preceded by
    /// `public`, `pub`, `bucket`, `schema`, `sequence`, `csrf`, … (`credentialsId`,
    /// `kms_key_id`, `public_key`, `secret_name`, `csrf-token`, `passwordLabel`); the id
    /// of a detect-secrets `DENYLIST` key (`private_key_id`) stays reported.
    ///
    /// **Password rule** (detect-secrets `KeywordDetector`, noseyparker `np.generic.3`–
    /// `.5`, `.7`, `.8`, `.11`–`.14`): for names on detect-secrets' `DENYLIST` (`api_key`,
    /// `private_key`, `client_key`, `db_pass`, `password`, `passwd`, `pwd`, `secret`, …)
    /// and the word `pass`, a value of 4–64 characters at any entropy, spaces allowed,
    /// when it is a quoted literal that ends its expression (not `"a" + b`), or an
    /// unquoted value after a username assignment on the same or the previous line
    /// (`user = Aladdin` / `password = open_sesame`); also `password "…";` (a name, a
    /// space, a literal and `;`), `the password is '…'` in prose
    /// and the password argument of .NET's `NetworkCredential(user, password)` and
    /// `DirectoryEntry(path, user, password)`. The value needs a letter or digit and must
    /// not be a reference or template (`$VAR`, `%s`, `@x`, `&lt;…`, `{…}`, `<…>`,
    /// `#css-id`), a path, route, URL or ARN, a dotted reference (`env.DB_PASSWORD`), a
    /// call, a `snake_case`/`SCREAMING_SNAKE` name in quotes (`"OPENAI_API_KEY"`), its own
    /// name (`Pass => "Pass"`), an escaped multi-line string, a placeholder (the list above
    /// plus `fake`) or a setting word (`required`, `none`, `true`, …). In a list of strings
    /// (not a call's arguments) only the high-entropy rule applies (`["pass", "auth"]`).
    ///
    /// So `password: changeme`, `token: ${GITHUB_TOKEN}` and `password = "${DB}"` are not
    /// flagged, while `password = "hunter2x"` is. Limitations: a long passphrase of whole
    /// words without symbols in an unquoted value (`CorrectHorseBatteryStaple42`) looks
    /// like an identifier and is missed.
    GenericSecret,
}

impl Detector {
    /// Number of detectors.
    pub const COUNT: usize = 13;

    /// Every detector, in declaration order.
    pub const ALL: [Detector; Detector::COUNT] = [
        Detector::Email,
        Detector::Phone,
        Detector::CreditCard,
        Detector::Iban,
        Detector::AwsAccessKey,
        Detector::GithubToken,
        Detector::OpenaiKey,
        Detector::AnthropicKey,
        Detector::SlackToken,
        Detector::GoogleApiKey,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::GenericSecret,
    ];

    /// The `snake_case` name, identical to the serde representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::CreditCard => "credit_card",
            Detector::Iban => "iban",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::GithubToken => "github_token",
            Detector::OpenaiKey => "openai_key",
            Detector::AnthropicKey => "anthropic_key",
            Detector::SlackToken => "slack_token",
            Detector::GoogleApiKey => "google_api_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::GenericSecret => "generic_secret",
        }
    }

    /// Whether this detector finds secrets or PII.
    pub fn category(self) -> Category {
        match self {
            Detector::Email | Detector::Phone | Detector::CreditCard | Detector::Iban => {
                Category::Pii
            }
            _ => Category::Secret,
        }
    }

    /// Position in [`Detector::ALL`] (0-based).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Overlap rank: when two findings overlap, the one with the lower rank wins.
    /// Validated, prefix-anchored formats come first; the heuristic key/value rule last.
    pub(crate) fn specificity(self) -> u8 {
        match self {
            Detector::PrivateKey => 0,
            Detector::Jwt => 1,
            Detector::AnthropicKey => 2,
            Detector::OpenaiKey => 3,
            Detector::GithubToken => 4,
            Detector::SlackToken => 5,
            Detector::AwsAccessKey => 6,
            Detector::GoogleApiKey => 7,
            Detector::Iban => 8,
            Detector::CreditCard => 9,
            Detector::Email => 10,
            Detector::Phone => 11,
            Detector::GenericSecret => 12,
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Detector {
    type Err = crate::GuardError;

    /// Parses the `snake_case` name returned by [`Detector::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Detector::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| crate::GuardError::UnknownDetector(s.to_owned()))
    }
}

/// One sensitive item found in a text.
///
/// `start..end` is a half-open **byte** range into the scanned `&str`; both ends lie on
/// UTF-8 character boundaries, so `&text[f.start..f.end]` is always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// What was found.
    pub detector: Detector,
    /// Byte offset of the first byte of the item.
    pub start: usize,
    /// Byte offset one past the last byte of the item.
    pub end: usize,
}

impl Finding {
    /// Length of the finding in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the finding covers no bytes (never true for findings from a scanner).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The matched text, or `None` if the range does not fit `text`.
    pub fn text<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.get(self.start..self.end)
    }
}
