//! Scan throughput on ~8 MB of realistic mixed text (prose, logs, code, JSON, a little
//! non-ASCII), once clean and once with a finding every few kilobytes.
//!
//! `cargo run --release --example throughput [-- <iterations>]` (default 10 iterations).

use nexus_guard::{Policy, Scanner};
use std::time::Instant;

/// Deterministic xorshift generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "returns",
    "a",
    "summary",
    "of",
    "each",
    "document",
    "and",
    "then",
    "we",
    "compare",
    "it",
    "with",
    "baseline",
    "results",
    "for",
    "tokens",
    "context",
    "window",
    "prompt",
    "should",
    "include",
    "examples",
    "when",
    "retrieval",
    "fails",
    "answer",
    "is",
    "key",
    "insight",
    "that",
    "latency",
    "depends",
    "on",
    "batch",
    "size",
    "throughput",
    "improves",
    "after",
    "warmup",
    "workflow",
    "engine",
    "step",
    "output",
    "schema",
    "valid",
    "user",
    "asked",
    "about",
    "quarterly",
    "report",
    "revenue",
    "growth",
    "in",
    "Europe",
    "Asia",
    "secret",
    "sauce",
    "password",
    "policy",
    "requires",
    "rotation",
    "every",
    "days",
    "café",
    "naïve",
    "résumé",
    "日本語",
    "テキスト",
    "Zürich",
    "München",
    "über",
    "straße",
];

const LINES: &[&str] = &[
    "2024-01-15T10:30:00Z INFO request_id=7f3a9c took 35ms status=200 path=/v1/chat",
    "let total: usize = items.iter().map(|x| x.len()).sum();",
    "{\"id\": 12345, \"name\": \"widget\", \"price\": 19.99, \"tags\": [\"a\", \"b\"]}",
    "See https://docs.example.com/guide/install#step-3 for version 1.2.3 details.",
    "| step | model | tokens | latency_ms |\n|---|---|---|---|\n| 1 | small | 512 | 120 |",
    "max_tokens: 4096\ntemperature: 0.7\ntop_p: 0.95",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
    "Order 48213 shipped on 2023-11-02, ETA 3-5 business days.",
    "def tokenize(text: str) -> list[str]:\n    return text.split()",
    "Chapter 7, page 142: the 1990s saw 3.5% annual growth.",
];

const FINDINGS: &[&str] = &[
    "Contact jane.doe@example.com for access.",
    "Call +44 20 7946 0958 tomorrow.",
    "Card 4111 1111 1111 1111 exp 12/29.",
    "IBAN GB82 WEST 1234 5698 7654 32.",
    "aws_access_key_id = AKIAQ3VR7NXL2MTB5KDW",
    "export GITHUB_TOKEN=ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7c",
    "OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0fGH3iJK6",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "DB_PASSWORD=Xk9#mP2$vL5@nQ8!wR3",
];

fn build(size: usize, finding_every: Option<usize>, rng: &mut Rng) -> String {
    let mut text = String::with_capacity(size + 1024);
    let mut since = 0;
    while text.len() < size {
        let before = text.len();
        if rng.below(4) == 0 {
            text.push_str(rng.pick(LINES));
            text.push('\n');
        } else {
            let n = 8 + rng.below(20);
            for i in 0..n {
                let w = rng.pick(WORDS);
                if i == 0 {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        text.extend(f.to_uppercase());
                        text.push_str(c.as_str());
                    }
                } else {
                    text.push(' ');
                    text.push_str(w);
                }
                if rng.below(25) == 0 {
                    text.push_str(&format!(" {}", rng.below(10_000)));
                }
            }
            text.push_str(".\n");
        }
        since += text.len() - before;
        if let Some(every) = finding_every {
            if since >= every {
                text.push_str(rng.pick(FINDINGS));
                text.push('\n');
                since = 0;
            }
        }
    }
    text
}

fn bench(name: &str, scanner: &Scanner, text: &str, iters: usize) {
    let found = scanner.scan(text).len();
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..iters {
        total += std::hint::black_box(scanner.scan(std::hint::black_box(text))).len();
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (text.len() * iters) as f64 / 1e6;
    println!(
        "{name:<28} {:>6.2} MB x {iters:<3} {:>8.1} MB/s  ({found} findings per pass, {total} total)",
        text.len() as f64 / 1e6,
        mb / secs
    );
}

fn main() -> Result<(), nexus_guard::GuardError> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let clean = build(8_000_000, None, &mut rng);
    let dirty = build(8_000_000, Some(4096), &mut rng);
    let scanner = Scanner::all()?;
    bench("scan, clean text", &scanner, &clean, iters);
    bench("scan, finding every ~4 KiB", &scanner, &dirty, iters);

    let policy = Policy::with_defaults()?;
    let start = Instant::now();
    let out = policy.apply(&dirty);
    println!(
        "Policy::apply (defaults)     {:>8.1} MB/s  ({} verdicts)",
        dirty.len() as f64 / 1e6 / start.elapsed().as_secs_f64(),
        out.verdicts.len()
    );
    Ok(())
}
