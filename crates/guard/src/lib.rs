//! Guardrail detectors for secrets and personal data in text that flows into and out of
//! LLM calls, plus a policy layer that decides what to do about them.
//!
//! # Pieces
//! - [`Detector`]: the catalogue (e-mail, phone, card, IBAN, vendor API keys, PEM private
//!   keys, JWTs, generic `key = value` secrets), each documented with its rule and source.
//! - [`Scanner`]: compiled once for a set of detectors, then [`Scanner::scan`] returns
//!   [`Finding`]s (detector + byte range). [`redact`] replaces findings with
//!   `[REDACTED:<detector>]`.
//! - [`Policy`]: [`Rule`]s mapping detectors to a [`Severity`] and a [`GuardAction`]
//!   (block, require approval, redact, warn); [`Policy::apply`] returns an [`Outcome`] with
//!   the possibly redacted text and one masked [`Verdict`] per detector.
//!
//! # Invariants
//! - Findings are sorted by `start`, never overlap, and their byte offsets lie on UTF-8
//!   character boundaries of the scanned `&str`. On overlap the more specific detector
//!   wins (validated vendor formats before PII, [`Detector::GenericSecret`] last).
//! - Scanning never panics, whatever the input; its cost is linear in the input length.
//! - Every candidate passes a validator beyond its pattern (Luhn, IBAN mod-97, JWT header
//!   decoding, IDNA for punycode domains, libphonenumber validity for phone numbers,
//!   entropy, or the placeholder and reference checks on password literals), so
//!   near-misses are not reported.
//! - A [`Verdict::sample`] never contains the whole matched value (see [`mask`]).
//! - No `unwrap`/`expect` outside tests: pattern compilation returns [`GuardError`].
//!
//! # Example
//! ```
//! use nexus_guard::{Detector, Policy, Scanner, redact};
//!
//! let scanner = Scanner::all()?;
//! let text = "key AKIAQ3VR7NXL2MTB5KDW, mail bob@example.com";
//! let found = scanner.scan(text);
//! assert_eq!(found[0].detector, Detector::AwsAccessKey);
//! assert_eq!(
//!     redact(text, &found),
//!     "key [REDACTED:aws_access_key], mail [REDACTED:email]"
//! );
//!
//! let outcome = Policy::with_defaults()?.apply(text);
//! assert_eq!(outcome.text, "key [REDACTED:aws_access_key], mail bob@example.com");
//! assert!(!outcome.blocked);
//! # Ok::<(), nexus_guard::GuardError>(())
//! ```

#![warn(missing_docs)]

mod detector;
mod generic;
mod phone;
mod policy;
mod scanner;
mod validate;

pub use detector::{Category, Detector, Finding};
pub use policy::{GuardAction, Outcome, Policy, Rule, Scope, Severity, Verdict, default_rules};
pub use scanner::{GuardError, Scanner, redact};
pub use validate::mask;
