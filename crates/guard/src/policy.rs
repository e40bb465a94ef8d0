//! The policy layer: map each detector to a severity and an action, apply it to a text.

use crate::detector::{Category, Detector, Finding};
use crate::scanner::{GuardError, Scanner, redact};
use crate::validate::mask;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered `Low < Medium < High < Critical`; serialized in
/// `snake_case` (`"low"`, `"medium"`, `"high"`, `"critical"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth noting; usually business contact data.
    Low,
    /// Personal data that should not be spread needlessly.
    Medium,
    /// Financial data or a credential with limited scope.
    High,
    /// Key material or a credential that grants broad access.
    Critical,
}

impl Severity {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What to do when a detector fires. Serialized as `"block"`, `"require_approval"`,
/// `"redact"`, `"warn"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Stop: the text must not be used. [`Outcome::blocked`] is set and the finding is
    /// redacted in [`Outcome::text`].
    Block,
    /// Pause for a human: [`Outcome::needs_approval`] is set and the finding is redacted in
    /// [`Outcome::text`] (the caller still holds the original if the approver allows it).
    RequireApproval,
    /// Replace the finding with `[REDACTED:<detector>]` in [`Outcome::text`] and continue.
    Redact,
    /// Leave the text unchanged; only report a [`Verdict`].
    Warn,
}

impl GuardAction {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardAction::Block => "block",
            GuardAction::RequireApproval => "require_approval",
            GuardAction::Redact => "redact",
            GuardAction::Warn => "warn",
        }
    }
}

/// Which text a rule guards. Guardrails tied to routing: a `cloud` rule scrubs or blocks
/// text only on its way to a cloud provider, so a local model may still see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every step input (before any provider) and output (the default).
    #[default]
    All,
    /// Only inputs sent to a cloud provider; a block makes the step fall back to a local
    /// model instead of failing.
    Cloud,
}

impl Scope {
    /// Whether this is [`Scope::All`] (the default, left out when serialising).
    pub fn is_all(&self) -> bool {
        *self == Scope::All
    }
}

/// One policy rule: what happens when `detector` fires.
///
/// JSON/YAML shape: `{"detector": "openai_key", "severity": "critical", "action": "redact"}`,
/// optionally with `"scope": "cloud"`; unknown fields are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The detector this rule applies to; at most one rule per detector in a policy.
    pub detector: Detector,
    /// Severity reported in the [`Verdict`].
    pub severity: Severity,
    /// Action taken on every finding of this detector.
    pub action: GuardAction,
    /// Which text the rule guards (default: all).
    #[serde(default, skip_serializing_if = "Scope::is_all")]
    pub scope: Scope,
}

/// The default rules, one per detector. Nothing blocks by default: a prompt that quotes a
/// key is usually a mistake to clean up, not an attack, so secrets and financial data are
/// **redacted** and contact data is only **warned** about.
///
/// | detector | severity | action |
/// |---|---|---|
/// | `private_key`, `aws_access_key`, `github_token`, `openai_key`, `anthropic_key` | critical | redact |
/// | `slack_token`, `google_api_key`, `jwt`, `generic_secret` | high | redact |
/// | `credit_card`, `iban` | high | redact |
/// | `phone` | medium | warn |
/// | `email` | low | warn |
///
/// Stricter deployments can switch secrets to [`GuardAction::Block`] or
/// [`GuardAction::RequireApproval`] with their own rule list.
pub fn default_rules() -> Vec<Rule> {
    Detector::ALL
        .into_iter()
        .map(|detector| {
            let (severity, action) = match detector {
                Detector::PrivateKey
                | Detector::AwsAccessKey
                | Detector::GithubToken
                | Detector::OpenaiKey
                | Detector::AnthropicKey => (Severity::Critical, GuardAction::Redact),
                Detector::SlackToken
                | Detector::GoogleApiKey
                | Detector::Jwt
                | Detector::GenericSecret => (Severity::High, GuardAction::Redact),
                Detector::CreditCard | Detector::Iban => (Severity::High, GuardAction::Redact),
                Detector::Phone => (Severity::Medium, GuardAction::Warn),
                Detector::Email => (Severity::Low, GuardAction::Warn),
            };
            Rule {
                detector,
                severity,
                action,
                scope: Scope::All,
            }
        })
        .collect()
}

/// What a policy concluded about one detector in one text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    /// The detector that fired.
    pub detector: Detector,
    /// Severity from the matching rule.
    pub severity: Severity,
    /// Action from the matching rule.
    pub action: GuardAction,
    /// Number of findings of this detector (>= 1).
    pub count: usize,
    /// The first finding, masked by [`mask`](crate::mask): at most four characters from
    /// each end (and never more than half of it), e.g. `"sk-p...4f2a"`. Never the whole
    /// value.
    pub sample: String,
}

/// The result of [`Policy::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// The input with every finding whose action is not [`GuardAction::Warn`] replaced by
    /// `[REDACTED:<detector>]`; identical to the input when nothing was redacted.
    pub text: String,
    /// One verdict per detector that fired, most severe first (ties in
    /// [`Detector::ALL`] order).
    pub verdicts: Vec<Verdict>,
    /// Some finding's rule says [`GuardAction::Block`].
    pub blocked: bool,
    /// Some finding's rule says [`GuardAction::RequireApproval`].
    pub needs_approval: bool,
}

impl Outcome {
    /// Whether any secret (as opposed to PII) was found.
    pub fn has_secrets(&self) -> bool {
        self.verdicts
            .iter()
            .any(|v| v.detector.category() == Category::Secret)
    }
}

/// A rule set bound to a scanner for exactly the detectors it names. `Send + Sync`; build
/// once and share.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    by_detector: [Option<Rule>; Detector::COUNT],
    scanner: Scanner,
}

impl Policy {
    /// Builds a policy. Detectors without a rule are not scanned for.
    ///
    /// # Errors
    /// [`GuardError::DuplicateRule`] if two rules name the same detector; the scanner's
    /// errors otherwise (see [`Scanner::new`]).
    pub fn new(rules: Vec<Rule>) -> Result<Policy, GuardError> {
        let mut by_detector = [None; Detector::COUNT];
        for r in &rules {
            let slot = &mut by_detector[r.detector.index()];
            if slot.is_some() {
                return Err(GuardError::DuplicateRule(r.detector));
            }
            *slot = Some(*r);
        }
        let detectors: Vec<Detector> = rules.iter().map(|r| r.detector).collect();
        Ok(Policy {
            scanner: Scanner::new(&detectors)?,
            rules,
            by_detector,
        })
    }

    /// A policy with [`default_rules`].
    ///
    /// # Errors
    /// As [`Policy::new`].
    pub fn with_defaults() -> Result<Policy, GuardError> {
        Policy::new(default_rules())
    }

    /// The rules, as given to [`Policy::new`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The scanner behind this policy.
    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Scans `text` and applies the rules; see [`Outcome`].
    pub fn apply(&self, text: &str) -> Outcome {
        let findings = self.scanner.scan(text);
        self.apply_findings(text, &findings)
    }

    /// Applies the rules to findings obtained elsewhere (e.g. from [`Policy::scanner`]).
    /// Findings of detectors without a rule are ignored.
    pub fn apply_findings(&self, text: &str, findings: &[Finding]) -> Outcome {
        let mut verdicts: Vec<Verdict> = Vec::new();
        let mut to_redact = Vec::new();
        let mut blocked = false;
        let mut needs_approval = false;
        for f in findings {
            let Some(rule) = self.by_detector[f.detector.index()] else {
                continue;
            };
            match rule.action {
                GuardAction::Block => blocked = true,
                GuardAction::RequireApproval => needs_approval = true,
                GuardAction::Redact | GuardAction::Warn => {}
            }
            if rule.action != GuardAction::Warn {
                to_redact.push(*f);
            }
            if let Some(v) = verdicts.iter_mut().find(|v| v.detector == f.detector) {
                v.count += 1;
            } else {
                verdicts.push(Verdict {
                    detector: f.detector,
                    severity: rule.severity,
                    action: rule.action,
                    count: 1,
                    sample: mask(f.text(text).unwrap_or_default()),
                });
            }
        }
        verdicts.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.detector.index().cmp(&b.detector.index()))
        });
        let text = if to_redact.is_empty() {
            text.to_owned()
        } else {
            redact(text, &to_redact)
        };
        Outcome {
            text,
            verdicts,
            blocked,
            needs_approval,
        }
    }
}
