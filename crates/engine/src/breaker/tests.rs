//! Unit tests of the breaker state machine (kept apart from the code they test).

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

const FAIL: CallOutcome = CallOutcome::Failure { retry_after: None };
const OK: CallOutcome = CallOutcome::Success;

fn fail_after(secs: u64) -> CallOutcome {
    CallOutcome::Failure {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

/// Acquires and records one call at `now`, asserting it was admitted normally.
fn call(b: &mut Breaker, now: DateTime<Utc>, outcome: CallOutcome) -> Option<Transition> {
    let admission = b.try_acquire(now).expect("admitted");
    assert_eq!(admission, Admission::Normal);
    b.record(now, admission, outcome, Some("HTTP 503"))
}

/// Trips a default-configured breaker at `now` with three failures in a row.
fn tripped(config: BreakerConfig, now: DateTime<Utc>) -> Breaker {
    let mut b = Breaker::new(config);
    call(&mut b, now, FAIL);
    call(&mut b, now, FAIL);
    let tr = call(&mut b, now, FAIL).expect("third failure trips");
    assert_eq!(tr.from, BreakerState::Closed);
    b
}

fn open_until(b: &Breaker) -> DateTime<Utc> {
    match b.snapshot().state {
        BreakerState::Open { until } => until,
        other => panic!("expected open, got {other:?}"),
    }
}

/// Acquires a probe at `now` and records `outcome` for it.
fn probe(b: &mut Breaker, now: DateTime<Utc>, outcome: CallOutcome) -> Option<Transition> {
    assert_eq!(b.try_acquire(now), Ok(Admission::Probe));
    b.record(now, Admission::Probe, outcome, Some("probe error"))
}

#[test]
fn defaults_are_valid_and_documented_values() {
    let c = BreakerConfig::default();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!((c.window, c.min_calls, c.consecutive_failures), (10, 5, 3));
    assert_eq!(c.failure_rate, 0.5);
    assert_eq!(c.open_base, Duration::from_secs(30));
    assert_eq!(c.open_multiplier, 2.0);
    assert_eq!(c.max_open, Duration::from_secs(600));
    assert_eq!((c.half_open_probes, c.half_open_successes), (1, 1));
}

#[test]
fn consecutive_failures_trip_without_minimum() {
    let mut b = Breaker::new(BreakerConfig::default());
    assert_eq!(call(&mut b, at(0), FAIL), None);
    assert_eq!(call(&mut b, at(1), FAIL), None);
    assert_eq!(b.state(at(1)), BreakerState::Closed);
    let tr = call(&mut b, at(2), FAIL).expect("trips");
    let until = at(32);
    assert_eq!(tr.from, BreakerState::Closed);
    assert_eq!(tr.to, BreakerState::Open { until });
    assert!(
        tr.reason.contains("3 consecutive failures"),
        "{}",
        tr.reason
    );
    assert!(tr.reason.contains("HTTP 503"), "{}", tr.reason);
    assert!(tr.reason.contains("open for 30s"), "{}", tr.reason);
    let snap = b.snapshot();
    assert_eq!(snap.trips, 1);
    assert_eq!(snap.window, vec![true, true, true]);
    assert_eq!(snap.opened_at, Some(at(2)));
    assert_eq!(snap.last_failure.as_deref(), Some("HTTP 503"));
}

#[test]
fn success_resets_the_consecutive_count() {
    // A rate of 100% cannot be reached with successes in the window: only the
    // consecutive trigger is live.
    let config = BreakerConfig {
        failure_rate: 1.0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(config);
    for i in 0..4 {
        assert_eq!(call(&mut b, at(i * 3), FAIL), None);
        assert_eq!(call(&mut b, at(i * 3 + 1), FAIL), None);
        assert_eq!(call(&mut b, at(i * 3 + 2), OK), None);
        assert_eq!(b.snapshot().consecutive_failures, 0);
    }
    assert_eq!(b.state(at(12)), BreakerState::Closed);
    call(&mut b, at(12), FAIL);
    call(&mut b, at(13), FAIL);
    let tr = call(&mut b, at(14), FAIL).expect("three in a row");
    assert!(
        tr.reason.starts_with("3 consecutive failures"),
        "{}",
        tr.reason
    );
}

#[test]
fn rate_trips_only_after_min_calls() {
    let config = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(config);
    for i in 0..4 {
        assert_eq!(call(&mut b, at(i), FAIL), None, "call {i}: below min_calls");
    }
    assert_eq!(b.state(at(4)), BreakerState::Closed);
    let tr = call(&mut b, at(4), FAIL).expect("fifth failure reaches min_calls");
    assert!(
        tr.reason
            .contains("failure rate 100% (5 of last 5 calls) >= 50%"),
        "{}",
        tr.reason
    );
}

#[test]
fn rate_trips_with_default_config_before_consecutive_limit() {
    let mut b = Breaker::new(BreakerConfig::default());
    // F F S F: 3 of 4, below min_calls; then F: 4 of 5 = 80%, only 2 in a row.
    for outcome in [FAIL, FAIL, OK, FAIL] {
        assert_eq!(call(&mut b, at(0), outcome), None);
    }
    let tr = call(&mut b, at(1), FAIL).expect("rate trip");
    assert!(tr.reason.starts_with("failure rate 80%"), "{}", tr.reason);
}

#[test]
fn only_a_failure_trips_on_rate() {
    let config = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let mut b = Breaker::new(config);
    for outcome in [FAIL, FAIL, FAIL, OK] {
        assert_eq!(call(&mut b, at(0), outcome), None);
    }
    // 3 of 5 = 60% >= 50% with min_calls reached, but the call was a success.
    assert_eq!(call(&mut b, at(1), OK), None);
    assert_eq!(b.state(at(1)), BreakerState::Closed);
    // 4 of 6 on the next failure.
    assert!(call(&mut b, at(2), FAIL).is_some());
}

#[test]
fn interleaved_successes_below_rate_keep_it_closed() {
    let mut b = Breaker::new(BreakerConfig::default());
    // One failure in three: 33% < 50%, never two in a row.
    for i in 0..30 {
        let outcome = if i % 3 == 1 { FAIL } else { OK };
        assert_eq!(call(&mut b, at(i), outcome), None, "call {i}");
    }
    assert_eq!(b.state(at(30)), BreakerState::Closed);
    let snap = b.snapshot();
    assert_eq!(snap.window.len(), 10, "window is bounded");
    assert_eq!(snap.window.iter().filter(|f| **f).count(), 3);
    // Exactly at the rate trips: S S F S F S F S F, then F -> 5 of 10 = 50%
    // (40%, 43%, 44% at the earlier failures).
    let mut b = Breaker::new(BreakerConfig::default());
    for i in 0..9 {
        let outcome = if i >= 2 && i % 2 == 0 { FAIL } else { OK };
        assert_eq!(call(&mut b, at(i), outcome), None, "call {i}");
    }
    let tr = call(&mut b, at(9), FAIL).expect("50% reaches the threshold");
    assert!(tr.reason.contains("5 of last 10"), "{}", tr.reason);
}

#[test]
fn open_rejects_until_until_then_half_opens() {
    let mut b = tripped(BreakerConfig::default(), at(0));
    let until = at(30);
    assert_eq!(open_until(&b), until);
    for now in [at(0), at(10), at_ms(29_999)] {
        assert_eq!(b.state(now), BreakerState::Open { until });
        assert!(b.is_open(now));
        assert_eq!(b.try_acquire(now), Err(until));
    }
    // Outcomes of calls admitted before the trip do not count while open.
    assert_eq!(b.record(at(5), Admission::Normal, OK, None), None);
    assert_eq!(b.state(at(5)), BreakerState::Open { until });
    // Expired: reads as half-open before anything changes it.
    assert_eq!(b.state(until), BreakerState::HalfOpen);
    assert!(!b.is_open(until));
    assert_eq!(b.snapshot().state, BreakerState::Open { until });
    assert_eq!(b.try_acquire(until), Ok(Admission::Probe));
    assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
}

#[test]
fn advance_reports_the_half_open_transition_once() {
    let mut b = tripped(BreakerConfig::default(), at(0));
    assert_eq!(b.advance(at(29)), None);
    let tr = b.advance(at(30)).expect("expired");
    assert_eq!(tr.from, BreakerState::Open { until: at(30) });
    assert_eq!(tr.to, BreakerState::HalfOpen);
    assert_eq!(b.advance(at(31)), None);
}

#[test]
fn half_open_allows_exactly_n_probes() {
    let config = BreakerConfig {
        half_open_probes: 2,
        half_open_successes: 3,
        ..BreakerConfig::default()
    };
    let mut b = tripped(config, at(0));
    let now = at(30);
    assert_eq!(b.try_acquire(now), Ok(Admission::Probe));
    assert_eq!(b.try_acquire(now), Ok(Admission::Probe));
    assert_eq!(
        b.try_acquire(now),
        Err(now),
        "third concurrent probe refused"
    );
    assert_eq!(b.snapshot().half_open_in_flight, 2);
    // A success frees its slot without closing (3 needed).
    assert_eq!(b.record(at(31), Admission::Probe, OK, None), None);
    assert_eq!(b.snapshot().half_open_successes, 1);
    assert_eq!(b.try_acquire(at(31)), Ok(Admission::Probe));
    assert_eq!(b.try_acquire(at(31)), Err(at(31)));
    // An ignored (e.g. cancelled) probe frees its slot and counts for nothing.
    assert_eq!(
        b.record(at(32), Admission::Probe, CallOutcome::Ignored, None),
        None
    );
    assert_eq!(b.snapshot().half_open_successes, 1);
    assert_eq!(b.try_acquire(at(32)), Ok(Admission::Probe));
    // A Normal call admitted before the trip does not count in half-open.
    assert_eq!(b.record(at(33), Admission::Normal, OK, None), None);
    assert_eq!(b.snapshot().half_open_successes, 1);
    assert_eq!(b.record(at(34), Admission::Probe, OK, None), None);
    let tr = b
        .record(at(35), Admission::Probe, OK, None)
        .expect("third success closes");
    assert_eq!(tr.to, BreakerState::Closed);
    assert_eq!(tr.reason, "3 trial call(s) succeeded");
}

#[test]
fn probe_failure_reopens_with_doubled_open_time() {
    let mut b = tripped(BreakerConfig::default(), at(0));
    let tr = probe(&mut b, at(30), FAIL).expect("re-opens");
    assert_eq!(tr.from, BreakerState::HalfOpen);
    assert_eq!(tr.to, BreakerState::Open { until: at(90) });
    assert!(tr.reason.starts_with("trial call failed"), "{}", tr.reason);
    assert!(tr.reason.contains("open for 1m (trip 2)"), "{}", tr.reason);
    assert_eq!(b.try_acquire(at(89)), Err(at(90)));
    let tr = probe(&mut b, at(90), FAIL).expect("re-opens");
    assert_eq!(tr.to, BreakerState::Open { until: at(210) });
    let snap = b.snapshot();
    assert_eq!(snap.trips, 3);
    assert_eq!(snap.opened_at, Some(at(90)));
    assert_eq!(snap.last_failure.as_deref(), Some("probe error"));
}

#[test]
fn open_time_is_capped_at_max_open() {
    let config = BreakerConfig {
        max_open: Duration::from_secs(100),
        ..BreakerConfig::default()
    };
    let mut b = tripped(config, at(0));
    let mut now = open_until(&b);
    assert_eq!(now, at(30));
    let mut lengths = Vec::new();
    for _ in 0..4 {
        probe(&mut b, now, FAIL).expect("re-opens");
        let until = open_until(&b);
        lengths.push((until - now).num_seconds());
        now = until;
    }
    assert_eq!(lengths, vec![60, 100, 100, 100]);
}

#[test]
fn huge_trip_counts_saturate_at_max_open() {
    let snap = BreakerSnapshot {
        state: BreakerState::HalfOpen,
        trips: u32::MAX - 1,
        ..BreakerSnapshot::default()
    };
    let mut b = Breaker::from_snapshot(BreakerConfig::default(), snap);
    probe(&mut b, at(0), FAIL).expect("re-opens");
    assert_eq!(open_until(&b), at(600));
    probe(&mut b, at(600), FAIL).expect("re-opens");
    assert_eq!(b.snapshot().trips, u32::MAX);
    assert_eq!(open_until(&b), at(1200));
}

#[test]
fn retry_after_lengthens_but_never_shortens_or_exceeds_cap() {
    let mut b = Breaker::new(BreakerConfig::default());
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), FAIL);
    let tr = call(&mut b, at(0), fail_after(120)).expect("trips");
    assert_eq!(tr.to, BreakerState::Open { until: at(120) });
    assert!(
        tr.reason.contains("open for 2m (trip 1, Retry-After 2m)"),
        "{}",
        tr.reason
    );

    let mut b = Breaker::new(BreakerConfig::default());
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), fail_after(5)).expect("trips");
    assert_eq!(open_until(&b), at(30), "shorter Retry-After keeps computed");

    let mut b = Breaker::new(BreakerConfig::default());
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), fail_after(3600)).expect("trips");
    assert_eq!(open_until(&b), at(600), "capped at max_open");

    // Also on a failed probe.
    let mut b = tripped(BreakerConfig::default(), at(0));
    probe(&mut b, at(30), fail_after(300)).expect("re-opens");
    assert_eq!(open_until(&b), at(330));
}

#[test]
fn probe_success_closes_and_resets_trips() {
    let mut b = tripped(BreakerConfig::default(), at(0));
    probe(&mut b, at(30), FAIL).expect("re-opens for 60s");
    assert_eq!(b.snapshot().trips, 2);
    let tr = probe(&mut b, at(90), OK).expect("closes");
    assert_eq!(tr.from, BreakerState::HalfOpen);
    assert_eq!(tr.to, BreakerState::Closed);
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::Closed);
    assert_eq!(snap.trips, 0);
    assert!(snap.window.is_empty());
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(snap.opened_at, None);
    assert_eq!(b.try_acquire(at(91)), Ok(Admission::Normal));
    // The next trip starts again from open_base.
    call(&mut b, at(100), FAIL);
    call(&mut b, at(100), FAIL);
    call(&mut b, at(100), FAIL).expect("trips");
    assert_eq!(open_until(&b), at(130));
}

#[test]
fn late_probe_after_close_counts_as_a_normal_call() {
    let config = BreakerConfig {
        half_open_probes: 2,
        ..BreakerConfig::default()
    };
    let mut b = tripped(config, at(0));
    assert_eq!(b.try_acquire(at(30)), Ok(Admission::Probe));
    assert_eq!(b.try_acquire(at(30)), Ok(Admission::Probe));
    assert!(b.record(at(31), Admission::Probe, OK, None).is_some());
    assert_eq!(b.record(at(40), Admission::Probe, FAIL, None), None);
    let snap = b.snapshot();
    assert_eq!(snap.window, vec![true]);
    assert_eq!(snap.half_open_in_flight, 0);
}

#[test]
fn ignored_outcomes_do_not_count() {
    let mut b = Breaker::new(BreakerConfig::default());
    for i in 0..20 {
        assert_eq!(call(&mut b, at(i), CallOutcome::Ignored), None);
    }
    let snap = b.snapshot();
    assert!(snap.window.is_empty());
    assert_eq!(snap.last_failure, None);
    // Ignored between failures neither breaks nor extends the run.
    call(&mut b, at(30), FAIL);
    call(&mut b, at(31), CallOutcome::Ignored);
    call(&mut b, at(32), FAIL);
    call(&mut b, at(33), CallOutcome::Ignored);
    assert_eq!(b.snapshot().consecutive_failures, 2);
    assert_eq!(b.snapshot().window, vec![true, true]);
    assert!(call(&mut b, at(34), FAIL).is_some());
}

#[test]
fn snapshot_round_trips_through_json_and_restores_open() {
    let b = tripped(BreakerConfig::default(), at(0));
    let snap = b.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["state"]["state"], "open");
    assert_eq!(value["state"]["until"], "2025-06-15T15:07:10Z");
    assert_eq!(value["window"], serde_json::json!([true, true, true]));
    let back: BreakerSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);

    let mut restored = Breaker::from_snapshot(BreakerConfig::default(), back);
    let until = at(30);
    assert_eq!(restored.state(at(10)), BreakerState::Open { until });
    assert_eq!(restored.try_acquire(at(10)), Err(until));
    assert_eq!(restored.snapshot(), snap);
    // The trip count survives: a failed probe doubles.
    probe(&mut restored, at(30), FAIL).expect("re-opens");
    assert_eq!(open_until(&restored), at(90));
}

#[test]
fn restored_half_open_in_flight_resets() {
    let mut b = tripped(BreakerConfig::default(), at(0));
    assert_eq!(b.try_acquire(at(30)), Ok(Admission::Probe));
    assert_eq!(b.try_acquire(at(30)), Err(at(30)));
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::HalfOpen);
    assert_eq!(snap.half_open_in_flight, 1);
    let json = serde_json::to_string(&snap).unwrap();
    let mut restored = Breaker::from_snapshot(
        BreakerConfig::default(),
        serde_json::from_str(&json).unwrap(),
    );
    assert_eq!(restored.snapshot().half_open_in_flight, 0);
    assert_eq!(restored.state(at(31)), BreakerState::HalfOpen);
    assert_eq!(restored.try_acquire(at(31)), Ok(Admission::Probe));
}

#[test]
fn restore_trims_window_to_config_and_tolerates_missing_fields() {
    let snap = BreakerSnapshot {
        window: vec![true, false, false, true, true],
        half_open_successes: 4,
        ..BreakerSnapshot::default()
    };
    let config = BreakerConfig {
        window: 3,
        min_calls: 3,
        ..BreakerConfig::default()
    };
    let b = Breaker::from_snapshot(config, snap);
    let restored = b.snapshot();
    assert_eq!(restored.window, vec![false, true, true]);
    assert_eq!(
        restored.half_open_successes, 0,
        "closed: no half-open count"
    );

    let partial: BreakerSnapshot =
        serde_json::from_str(r#"{"state":{"state":"closed"},"future_field":1}"#).unwrap();
    assert_eq!(partial, BreakerSnapshot::default());
}

#[test]
fn config_serde_uses_milliseconds_and_rejects_unknown_fields() {
    let json = serde_json::to_value(BreakerConfig::default()).unwrap();
    assert_eq!(json["open_base_ms"], 30_000);
    assert_eq!(json["max_open_ms"], 600_000);
    let back: BreakerConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, BreakerConfig::default());

    let partial: BreakerConfig =
        serde_json::from_str(r#"{"window":20,"open_base_ms":1500}"#).unwrap();
    assert_eq!(partial.window, 20);
    assert_eq!(partial.open_base, Duration::from_millis(1500));
    assert_eq!(partial.min_calls, 5);

    assert!(serde_json::from_str::<BreakerConfig>(r#"{"open_base":1}"#).is_err());
}

#[test]
fn validate_rejects_out_of_range_values() {
    let ok = BreakerConfig::default();
    let cases: [(BreakerConfig, &str); 9] = [
        (
            BreakerConfig {
                window: 0,
                min_calls: 0,
                ..ok.clone()
            },
            "window",
        ),
        (
            BreakerConfig {
                min_calls: 11,
                ..ok.clone()
            },
            "min_calls",
        ),
        (
            BreakerConfig {
                failure_rate: 0.0,
                ..ok.clone()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                failure_rate: f64::NAN,
                ..ok.clone()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                open_base: Duration::ZERO,
                ..ok.clone()
            },
            "open_base_ms",
        ),
        (
            BreakerConfig {
                open_multiplier: 0.5,
                ..ok.clone()
            },
            "open_multiplier",
        ),
        (
            BreakerConfig {
                max_open: Duration::from_secs(1),
                ..ok.clone()
            },
            "max_open_ms",
        ),
        (
            BreakerConfig {
                half_open_probes: 0,
                ..ok.clone()
            },
            "half_open_probes",
        ),
        (
            BreakerConfig {
                half_open_successes: 0,
                ..ok.clone()
            },
            "half_open_successes",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(config.validate().map_err(|e| e.field), Err(field));
    }
    let e = BreakerConfig { window: 0, ..ok }.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid breaker config: `window` must be at least 1"
    );
}

#[test]
fn transition_and_state_serialize_tagged() {
    let mut b = Breaker::new(BreakerConfig::default());
    call(&mut b, at(0), FAIL);
    call(&mut b, at(0), FAIL);
    let tr = call(&mut b, at(0), FAIL).unwrap();
    let value = serde_json::to_value(&tr).unwrap();
    assert_eq!(value["from"], serde_json::json!({"state": "closed"}));
    assert_eq!(value["to"]["state"], "open");
    assert_eq!(value["to"]["until"], "2025-06-15T15:07:10Z");
    assert!(value["reason"].as_str().unwrap().contains("consecutive"));
    assert_eq!(
        serde_json::to_value(BreakerState::HalfOpen).unwrap(),
        serde_json::json!({"state": "half_open"})
    );
    assert_eq!(serde_json::to_value(Admission::Probe).unwrap(), "probe");
    let back: Transition = serde_json::from_value(value).unwrap();
    assert_eq!(back, tr);
}

#[test]
fn registry_tracks_keys_independently() {
    let key = breaker_key("openai", "gpt-4o-mini");
    assert_eq!(key, "openai:gpt-4o-mini");
    let other = "ollama:llama3.2";
    let mut reg = Breakers::new(BreakerConfig::default());
    assert_eq!(reg.state(&key, at(0)), BreakerState::Closed);
    assert!(!reg.is_open(&key, at(0)));
    assert_eq!(reg.snapshot(&key), None);
    // Ignored outcomes of unknown keys create nothing.
    assert_eq!(
        reg.record(&key, at(0), Admission::Normal, CallOutcome::Ignored, None),
        None
    );
    assert!(reg.snapshots().is_empty());

    for _ in 0..2 {
        let adm = reg.try_acquire(&key, at(0)).unwrap();
        assert_eq!(reg.record(&key, at(0), adm, FAIL, Some("503")), None);
    }
    let adm = reg.try_acquire(other, at(0)).unwrap();
    assert_eq!(reg.record(other, at(0), adm, OK, None), None);
    let adm = reg.try_acquire(&key, at(0)).unwrap();
    let tr = reg
        .record(&key, at(0), adm, FAIL, Some("503"))
        .expect("trips");
    assert_eq!(tr.to, BreakerState::Open { until: at(30) });

    assert!(reg.is_open(&key, at(29)));
    assert!(!reg.is_open(other, at(29)));
    assert_eq!(reg.try_acquire(&key, at(29)), Err(at(30)));
    assert_eq!(reg.try_acquire(other, at(29)), Ok(Admission::Normal));
    assert!(!reg.is_open(&key, at(30)));
    assert_eq!(reg.state(&key, at(30)), BreakerState::HalfOpen);

    let snaps = reg.snapshots();
    let keys: Vec<&str> = snaps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec![other, key.as_str()], "sorted by key");

    let mut restored = Breakers::restore(BreakerConfig::default(), snaps);
    assert_eq!(
        restored.state(&key, at(10)),
        BreakerState::Open { until: at(30) }
    );
    assert_eq!(restored.snapshot(other), reg.snapshot(other));
    let tr = restored.advance(&key, at(30)).expect("half-opens");
    assert_eq!(tr.to, BreakerState::HalfOpen);
    assert_eq!(restored.try_acquire(&key, at(30)), Ok(Admission::Probe));
    let tr = restored
        .record(&key, at(31), Admission::Probe, OK, None)
        .expect("closes");
    assert_eq!(tr.to, BreakerState::Closed);
    assert_eq!(restored.snapshot(&key).unwrap().trips, 0);
}

#[test]
fn fmt_duration_is_compact() {
    assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
    assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(fmt_duration(Duration::ZERO), "0ms");
}
