//! Integration tests: corpus precision/recall per detector, redaction, overlaps, policy
//! actions, masking, UTF-8 offsets and robustness on large inputs.
//!
//! Run `cargo test --test guard -- --nocapture` to see the precision/recall table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use nexus_guard::{
    Category, Detector, Finding, GuardAction, GuardError, Policy, Rule, Scanner, Severity,
    default_rules, mask, redact,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Corpus {
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    id: String,
    text: String,
    expect: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    detector: Detector,
    value: String,
}

#[derive(Default)]
struct Tally {
    pos_samples: usize,
    neg_samples: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
}

fn corpus() -> Corpus {
    serde_json::from_str(include_str!("corpus.json")).expect("corpus.json parses")
}

fn scanner() -> Scanner {
    Scanner::all().expect("built-in patterns compile")
}

#[test]
fn corpus_precision_and_recall() {
    let corpus = corpus();
    let scanner = scanner();
    let mut tally: BTreeMap<Detector, Tally> = Detector::ALL
        .iter()
        .map(|&d| (d, Tally::default()))
        .collect();
    let mut errors = Vec::new();

    for s in &corpus.samples {
        let mut parts = s.id.split('/');
        let target: Detector = parts
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("bad sample id {}", s.id));
        match parts.next() {
            Some("pos") => tally.get_mut(&target).unwrap().pos_samples += 1,
            Some("neg") => tally.get_mut(&target).unwrap().neg_samples += 1,
            _ => panic!("bad sample id {}", s.id),
        }
        if parts.next().is_none() {
            panic!("bad sample id {}", s.id);
        }
        for e in &s.expect {
            assert!(s.text.contains(&e.value), "{}: value not in text", s.id);
        }

        let found = scanner.scan(&s.text);
        let mut unmatched: Vec<&Expected> = s.expect.iter().collect();
        for f in &found {
            let value = &s.text[f.start..f.end];
            let t = tally.get_mut(&f.detector).unwrap();
            if let Some(i) = unmatched
                .iter()
                .position(|e| e.detector == f.detector && e.value == value)
            {
                unmatched.remove(i);
                t.tp += 1;
            } else {
                t.fp += 1;
                errors.push(format!("FP {} {}: {:?}", s.id, f.detector, value));
            }
        }
        for e in unmatched {
            tally.get_mut(&e.detector).unwrap().fn_ += 1;
            errors.push(format!("FN {} {}: {:?}", s.id, e.detector, e.value));
        }
    }

    println!();
    println!(
        "{:<16} {:>4} {:>4} {:>4} {:>3} {:>3} {:>9} {:>7}",
        "detector", "pos", "neg", "TP", "FP", "FN", "precision", "recall"
    );
    let mut failed = Vec::new();
    for (d, t) in &tally {
        let precision = ratio(t.tp, t.tp + t.fp);
        let recall = ratio(t.tp, t.tp + t.fn_);
        println!(
            "{:<16} {:>4} {:>4} {:>4} {:>3} {:>3} {:>9.3} {:>7.3}",
            d.as_str(),
            t.pos_samples,
            t.neg_samples,
            t.tp,
            t.fp,
            t.fn_,
            precision,
            recall
        );
        if t.pos_samples < 15 || t.neg_samples < 15 {
            failed.push(format!("{d}: fewer than 15 positive or negative samples"));
        }
        // Every detector is held to 0.95. The corpus deliberately keeps known misses (see
        // gen_corpus.py): a Luhn-valid 16-digit constant in code (card FP) and a
        // symbol-free passphrase that looks like an identifier (generic_secret FN); the
        // phone-shaped digits inside a mistyped IBAN are no longer reported.
        if precision < 0.95 || recall < 0.95 {
            failed.push(format!("{d}: precision {precision:.3}, recall {recall:.3}"));
        }
    }
    for e in &errors {
        println!("{e}");
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Precision/recall with the convention 0/0 = 1 (no predictions, nothing expected).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

#[test]
fn redaction_replaces_each_finding() {
    let scanner = scanner();
    let text = "mail jane@example.com, card 4111 1111 1111 1111, key AKIAQ3VR7NXL2MTB5KDW.";
    let found = scanner.scan(text);
    assert_eq!(
        found.iter().map(|f| f.detector).collect::<Vec<_>>(),
        [
            Detector::Email,
            Detector::CreditCard,
            Detector::AwsAccessKey
        ]
    );
    assert_eq!(
        redact(text, &found),
        "mail [REDACTED:email], card [REDACTED:credit_card], key [REDACTED:aws_access_key]."
    );
    // No findings: unchanged. Bad findings (out of range, overlapping, inside a char) are skipped.
    assert_eq!(redact(text, &[]), text);
    let bogus = [
        Finding {
            detector: Detector::Jwt,
            start: 5,
            end: 9999,
        },
        Finding {
            detector: Detector::Email,
            start: 5,
            end: 21,
        },
        Finding {
            detector: Detector::Phone,
            start: 10,
            end: 12,
        },
    ];
    assert_eq!(
        redact(text, &bogus),
        "mail [REDACTED:email], card 4111 1111 1111 1111, key AKIAQ3VR7NXL2MTB5KDW."
    );
    let utf = "é";
    let inside = [Finding {
        detector: Detector::Email,
        start: 1,
        end: 2,
    }];
    assert_eq!(redact(utf, &inside), "é");
}

#[test]
fn overlaps_prefer_the_specific_detector() {
    let scanner = scanner();
    let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRsT3BlbkFJ8tUv1wXy4zAB7cDE0fGH3iJK6";
    let text = format!("OPENAI_API_KEY={key}\n");
    let found = scanner.scan(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].detector, Detector::OpenaiKey);
    assert_eq!(&text[found[0].start..found[0].end], key);

    // A JWT in a bearer header is a JWT, not a generic secret.
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let found = scanner.scan(&format!("Authorization: Bearer {jwt}"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::Jwt);

    // Digits of a print-format IBAN are not also a card or phone number.
    let found = scanner.scan("IBAN DE89 3704 0044 0532 0130 00");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::Iban);

    // A token in a git URL is not reported as an e-mail address too.
    let gh = "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7c";
    let found = scanner.scan(&format!("https://{gh}@github.com/o/r.git"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::GithubToken);

    // Anchors that overlap each other are all checked.
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
    let found = scanner.scan(&format!("sk{pem}"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::PrivateKey);

    // Findings are sorted and disjoint.
    let text = format!("{gh} a@example.com {key} +44 20 7946 0958 {jwt} 4111111111111111");
    let found = scanner.scan(&text);
    assert_eq!(found.len(), 6);
    for w in found.windows(2) {
        assert!(w[0].end <= w[1].start, "{found:?}");
    }
}

#[test]
fn only_enabled_detectors_run() {
    let only_generic = Scanner::new(&[Detector::GenericSecret]).unwrap();
    let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRsT3BlbkFJ8tUv1wXy4zAB7cDE0fGH3iJK6";
    let found = only_generic.scan(&format!("OPENAI_API_KEY={key} mail a@example.com"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::GenericSecret);
    assert_eq!(
        only_generic.detectors(),
        vec![Detector::GenericSecret],
        "detectors() lists what was enabled"
    );
    let none = Scanner::new(&[]).unwrap();
    assert!(none.scan("a@example.com 4111111111111111").is_empty());
}

fn rule(detector: Detector, severity: Severity, action: GuardAction) -> Rule {
    Rule {
        detector,
        severity,
        action,
        scope: nexus_guard::Scope::All,
    }
}

#[test]
fn policy_actions() {
    let policy = Policy::new(vec![
        rule(Detector::PrivateKey, Severity::Critical, GuardAction::Block),
        rule(
            Detector::CreditCard,
            Severity::High,
            GuardAction::RequireApproval,
        ),
        rule(
            Detector::AwsAccessKey,
            Severity::Critical,
            GuardAction::Redact,
        ),
        rule(Detector::Email, Severity::Low, GuardAction::Warn),
    ])
    .unwrap();

    // Warn: text unchanged, verdict reported.
    let out = policy.apply("write to jane@example.com and bob@example.org");
    assert_eq!(out.text, "write to jane@example.com and bob@example.org");
    assert!(!out.blocked && !out.needs_approval);
    assert_eq!(out.verdicts.len(), 1);
    assert_eq!(out.verdicts[0].count, 2);
    assert_eq!(out.verdicts[0].action, GuardAction::Warn);

    // Redact.
    let out = policy.apply("key AKIAQ3VR7NXL2MTB5KDW ok");
    assert_eq!(out.text, "key [REDACTED:aws_access_key] ok");
    assert!(!out.blocked && !out.needs_approval);
    assert!(out.has_secrets());

    // Require approval: flagged and redacted.
    let out = policy.apply("pay with 4111 1111 1111 1111");
    assert!(out.needs_approval && !out.blocked);
    assert_eq!(out.text, "pay with [REDACTED:credit_card]");

    // Block, with verdicts sorted by severity.
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
    let out = policy.apply(&format!(
        "mail jane@example.com\n{pem}\ncard 4111111111111111"
    ));
    assert!(out.blocked && out.needs_approval);
    let order: Vec<_> = out.verdicts.iter().map(|v| v.detector).collect();
    assert_eq!(
        order,
        [Detector::PrivateKey, Detector::CreditCard, Detector::Email]
    );
    assert!(!out.text.contains("MIIEvQ"));
    assert!(out.text.contains("jane@example.com"));

    // A PEM header alone (as in parser code) is not a key.
    let out = policy.apply("const HEADER: &str = \"-----BEGIN PRIVATE KEY-----\";");
    assert!(!out.blocked);

    // Detectors without a rule are not scanned.
    let out = policy.apply("call +44 20 7946 0958");
    assert!(out.verdicts.is_empty());

    // Duplicate rules are rejected.
    let dup = Policy::new(vec![
        rule(Detector::Email, Severity::Low, GuardAction::Warn),
        rule(Detector::Email, Severity::High, GuardAction::Block),
    ]);
    assert!(matches!(
        dup,
        Err(GuardError::DuplicateRule(Detector::Email))
    ));
}

#[test]
fn default_rules_are_documented_choices() {
    let rules = default_rules();
    assert_eq!(rules.len(), Detector::ALL.len());
    for r in &rules {
        match r.detector.category() {
            Category::Secret => {
                assert_eq!(r.action, GuardAction::Redact);
                assert!(r.severity >= Severity::High);
            }
            Category::Pii => match r.detector {
                Detector::CreditCard | Detector::Iban => {
                    assert_eq!(
                        (r.severity, r.action),
                        (Severity::High, GuardAction::Redact)
                    )
                }
                _ => {
                    assert_eq!(r.action, GuardAction::Warn);
                    assert!(r.severity <= Severity::Medium);
                }
            },
        }
    }
    let policy = Policy::with_defaults().unwrap();
    let out = policy.apply("token ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7c from a@example.com");
    assert_eq!(out.text, "token [REDACTED:github_token] from a@example.com");
    assert!(!out.blocked && !out.needs_approval);
}

#[test]
fn serde_shapes() {
    let r: Rule = serde_json::from_str(
        r#"{"detector":"openai_key","severity":"critical","action":"require_approval"}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        rule(
            Detector::OpenaiKey,
            Severity::Critical,
            GuardAction::RequireApproval
        )
    );
    let unknown = serde_json::from_str::<Rule>(
        r#"{"detector":"email","severity":"low","action":"warn","extra":1}"#,
    );
    assert!(unknown.is_err(), "deny_unknown_fields");
    for d in Detector::ALL {
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{}\"", d.as_str())
        );
        assert_eq!(d.as_str().parse::<Detector>().unwrap(), d);
    }
    assert_eq!(
        serde_json::to_string(&GuardAction::RequireApproval).unwrap(),
        "\"require_approval\""
    );
    assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
    let schema = schemars::schema_for!(Rule);
    let json = serde_json::to_string(&schema).unwrap();
    assert!(json.contains("require_approval") && json.contains("generic_secret"));
}

#[test]
fn masked_samples_never_contain_the_secret() {
    let corpus = corpus();
    let policy = Policy::new(
        Detector::ALL
            .iter()
            .map(|&d| rule(d, Severity::High, GuardAction::Warn))
            .collect(),
    )
    .unwrap();
    let mut checked = 0;
    for s in &corpus.samples {
        let found = policy.scanner().scan(&s.text);
        let out = policy.apply(&s.text);
        for v in &out.verdicts {
            let f = found.iter().find(|f| f.detector == v.detector).unwrap();
            let value = &s.text[f.start..f.end];
            assert!(!v.sample.contains(value), "{}: {:?}", s.id, v.sample);
            let shown = v.sample.replace("...", "").chars().count();
            assert!(
                shown * 2 <= value.chars().count(),
                "{}: {:?}",
                s.id,
                v.sample
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
    assert_eq!(
        mask("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0fGH4f2a"),
        "sk-p...4f2a"
    );
    assert_eq!(mask("abc"), "***");
}

#[test]
fn utf8_offsets_around_findings() {
    let scanner = scanner();
    let cases = [
        (
            "日本語のテキスト jane@example.com 終わり",
            "jane@example.com",
        ),
        ("Zoë’s card → 4111 1111 1111 1111 ✓", "4111 1111 1111 1111"),
        ("🔑AKIAQ3VR7NXL2MTB5KDW🔑", "AKIAQ3VR7NXL2MTB5KDW"),
        ("«+44 20 7946 0958»", "+44 20 7946 0958"),
        (
            "Ключ: ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7c — удалить",
            "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7c",
        ),
        (
            "Konto: GB82 WEST 1234 5698 7654 32 ü",
            "GB82 WEST 1234 5698 7654 32",
        ),
        (
            "mot de passe : password=Çx9#Kp2$Lm5@Qz8! fin",
            "Çx9#Kp2$Lm5@Qz8!",
        ),
    ];
    for (text, value) in cases {
        let found = scanner.scan(text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        let f = found[0];
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        assert_eq!(&text[f.start..f.end], value);
        assert_eq!(f.text(text), Some(value));
        let red = redact(text, &found);
        assert!(!red.contains(value));
        assert!(red.contains(&format!("[REDACTED:{}]", f.detector)));
    }
    // Latin-script local parts are whole addresses; other scripts end the local part.
    for (text, value) in [
        ("müller@example.de", "müller@example.de"),
        ("メールはtanaka@example.jpです", "tanaka@example.jp"),
    ] {
        let found = scanner.scan(text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        assert_eq!(found[0].text(text), Some(value));
    }
}

/// Deterministic xorshift generator, so the test needs no extra dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn large_random_inputs_do_not_panic() {
    let scanner = scanner();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // Fragments that exercise every candidate path, mixed with random bytes and chars.
    let pieces = [
        "sk-",
        "sk-ant-",
        "AKIA",
        "ghp_",
        "github_pat_",
        "xoxb-1-",
        "AIza",
        "eyJ",
        "-----BEGIN ",
        "PRIVATE KEY-----",
        "-----END ",
        "@",
        ".",
        "+",
        "(",
        ")",
        "-",
        " ",
        "\n",
        "key=",
        "Token: ",
        "Bearer ",
        "GB82",
        "4111 ",
        "0",
        "9",
        "é",
        "日本",
        "🔑",
        "\\n",
        "=",
        "\"",
    ];
    let mut text = String::with_capacity(1 << 20);
    while text.len() < 1 << 20 {
        let r = rng.next();
        match r % 4 {
            0 => text.push_str(pieces[(r >> 8) as usize % pieces.len()]),
            1 => text.push(char::from(b'0' + (r >> 8) as u8 % 10)),
            2 => text.push(char::from(b'A' + (r >> 8) as u8 % 58)),
            _ => text.push(char::from_u32(0x20 + (r >> 8) as u32 % 0x2000).unwrap_or('x')),
        }
    }
    let found = scanner.scan(&text);
    for w in found.windows(2) {
        assert!(w[0].end <= w[1].start);
    }
    for f in &found {
        assert!(f.start < f.end && text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
    }
    let _ = redact(&text, &found);
    let _ = Policy::with_defaults().unwrap().apply(&text);

    // Values that run past the length cap inside multi-byte characters.
    for unit in ["é", "日", "🔑", "aé"] {
        let text = format!("password={}", unit.repeat(600));
        assert!(scanner.scan(&text).is_empty());
        let text = format!("Authorization: Bearer {}", unit.repeat(600));
        assert!(scanner.scan(&text).is_empty());
    }

    // Adversarial repetitions stay fast and panic-free.
    for unit in [
        "eyJ",
        "key=",
        "sk-",
        "@a.",
        "1 ",
        "-----BEGIN PRIVATE KEY-----",
        "AKIA",
        "+1",
        "{",
        "{a}'|@",
        "}~@a.co ",
    ] {
        let text = unit.repeat((1 << 18) / unit.len());
        let start = std::time::Instant::now();
        let _ = scanner.scan(&text);
        assert!(
            start.elapsed().as_secs() < 10,
            "{unit:?} took {:?}",
            start.elapsed()
        );
    }
}

/// AWS key ids are reported without an entropy floor, as detect-secrets, noseyparker and
/// secretlint report them; AWS's documentation example ids (`…EXAMPLE`) and the `X` mask
/// are placeholders.
#[test]
fn aws_key_ids_and_their_placeholders() {
    let scanner = scanner();
    let keys = |text: &str| -> Vec<String> {
        scanner
            .scan(text)
            .iter()
            .filter(|f| f.detector == Detector::AwsAccessKey)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    };
    for key in [
        "AKIAQ3VR7NXL2MTB5KDW",
        "ASIAAAAAAAAAAAAAAAAA",
        "ABIA0000000000000000",
        "ACCADEADBEEFDEADBEEF",
        "A3T0XXXXXXXXXXXXXXXY",
    ] {
        assert_eq!(keys(&format!("id {key} here")), [key]);
    }
    for placeholder in [
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAI44QH8DHBEXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
        "AKIAXXXXXXXXXXXXXXXX",
        "ASIAXXXXXXXXXXXXXXXX",
    ] {
        assert!(
            keys(&format!("id {placeholder} here")).is_empty(),
            "{placeholder}"
        );
    }
}

/// E-mail local parts take RFC 5322's symbols, but not the text the address is written
/// in: `key=value`, URL paths and queries, quotes and Markdown, templates, CJK punctuation.
#[test]
fn email_local_parts_and_their_surroundings() {
    let scanner = scanner();
    let emails = |text: &str| -> Vec<String> {
        scanner
            .scan(text)
            .iter()
            .filter(|f| f.detector == Detector::Email)
            .map(|f| text[f.start..f.end].to_owned())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        ("mail o'brien@example.ie", &["o'brien@example.ie"]),
        ("$A12345@example.com", &["$A12345@example.com"]),
        ("!def!xyz%abc@example.com", &["!def!xyz%abc@example.com"]),
        ("a^b`c{|}~d@example.org", &["a^b`c{|}~d@example.org"]),
        ("user.email=dev@example.org", &["dev@example.org"]),
        ("--to=ops@example.net --dry-run", &["ops@example.net"]),
        (
            "https://example.com/x?a=1&to=bob@example.org#top",
            &["bob@example.org"],
        ),
        (
            "https://example.com/u/carol@example.com/",
            &["carol@example.com"],
        ),
        ("q/r=s?t^u{|}~@example.org", &["t^u{|}~@example.org"]),
        ("say 'jane@example.com'", &["jane@example.com"]),
        ("`jane@example.com`", &["jane@example.com"]),
        ("**jane@example.com**", &["jane@example.com"]),
        ("~~jane@example.com~~", &["jane@example.com"]),
        ("{jane@example.com}", &["jane@example.com"]),
        (
            "|jane@example.com|bob@example.org|",
            &["jane@example.com", "bob@example.org"],
        ),
        (
            "{% if a %}jane@example.com{% endif %}",
            &["jane@example.com"],
        ),
        ("連絡先：tanaka@example.jp。", &["tanaka@example.jp"]),
        ("「sato@example.co.jp」", &["sato@example.co.jp"]),
        ("（suzuki@example.com）、", &["suzuki@example.com"]),
        ("*@example.com", &[]),
        ("{{ user }}@example.com", &[]),
        ("{{user}}@example.com", &[]),
        ("f'{user}@example.com'", &[]),
        ("${USER}@example.com", &[]),
        ("{}@example.com", &[]),
        ("'@example.com", &[]),
    ];
    for (text, want) in cases {
        assert_eq!(emails(text), *want, "{text}");
    }
}

#[test]
fn scanner_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scanner>();
    assert_send_sync::<Policy>();
}

#[test]
fn names_match_the_serialized_form() {
    use nexus_guard::{GuardAction, Severity};
    for s in [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    for a in [
        GuardAction::Block,
        GuardAction::RequireApproval,
        GuardAction::Redact,
        GuardAction::Warn,
    ] {
        assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
    }
}
