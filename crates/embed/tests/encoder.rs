//! The encoder on the real all-MiniLM-L6-v2 files (`scripts/fetch-model.sh` puts them in
//! place): vectors of unit length, related sentences nearer than unrelated ones, a batch
//! with padding equal to texts one at a time, long texts refused or cut.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line
use nexus_embed::{MAX_TOKENS, SentenceEncoder, default_model_dir};

fn encoder() -> SentenceEncoder {
    match SentenceEncoder::load(&default_model_dir()) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn related_sentences_are_nearer_than_unrelated_ones() -> anyhow::Result<()> {
    let enc = encoder();
    let texts: Vec<String> = [
        "How do I reset my password?",
        "I forgot my login credentials and need to change them.",
        "The recipe needs two cups of flour and an egg.",
    ]
    .map(String::from)
    .to_vec();
    let v = enc.embed(&texts, false)?;
    assert_eq!(v.len(), 3);
    assert_eq!(enc.dimensions(), 384);
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((dot(x, x) - 1.0).abs() < 1e-4, "unit length");
    }
    let near = dot(&v[0], &v[1]);
    let far = dot(&v[0], &v[2]);
    assert!(near > far + 0.2, "password texts {near} vs recipe {far}");
    Ok(())
}

#[test]
fn a_padded_batch_gives_the_vectors_of_texts_one_at_a_time() -> anyhow::Result<()> {
    let enc = encoder();
    let texts: Vec<String> = [
        "short",
        "a much longer sentence that needs padding of the other one",
    ]
    .map(String::from)
    .to_vec();
    let batch = enc.embed(&texts, false)?;
    for (i, t) in texts.iter().enumerate() {
        let one = enc.embed(std::slice::from_ref(t), false)?;
        let diff: f32 = one[0]
            .iter()
            .zip(&batch[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "text {i} differs by {diff}");
    }
    Ok(())
}

#[test]
fn a_text_over_the_window_is_refused_unless_cutting_is_allowed() -> anyhow::Result<()> {
    let enc = encoder();
    let long = vec!["word ".repeat(MAX_TOKENS + 10)];
    let err = enc
        .embed(&long, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("text 0 has 268 word pieces"), "{err}");
    let cut = enc.embed(&long, true)?;
    assert_eq!(cut[0].len(), 384);
    assert!(enc.count_tokens("hello world")? == 4);
    Ok(())
}
