//! Embeddings through the providers: Ollama's `/api/embed` against the Ollama-protocol
//! test server (real vectors of the test model, as the daemon's `EmbedHandler` shapes
//! them), the OpenAI-compatible `/embeddings` against a loopback server that answers as
//! OpenAI documents it, and llama-cpp-python's real server, which answers one vector per
//! token for the repository's model and is refused clearly.

use nexus_engine::provider::{EmbedRequest, MAX_EMBED_INPUTS, Provider, ProviderErrorKind};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::scripted::{Behavior, ScriptedServer};
use nexus_tests::{LlamaServer, OllamaServer};
use serde_json::json;

fn request(model: &str, inputs: &[&str]) -> EmbedRequest {
    EmbedRequest {
        model: model.to_string(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        dimensions: None,
        truncate: false,
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_embeddings_are_unit_vectors_in_input_order() -> anyhow::Result<()> {
    let specs = vec![json!({"name": "all-minilm:latest", "capabilities": ["embedding"]})];
    let server = tokio::task::spawn_blocking(move || {
        OllamaServer::start_with_specs(&[], &specs, &["--default-num-ctx", "512"])
    })
    .await??;
    let provider = OllamaProvider::new(&server.url)?;
    assert!(provider.can_embed());

    let texts = [
        "The cat sat on the mat.",
        "Stock prices fell sharply.",
        "The cat sat on the mat.",
    ];
    let got = provider.embed(request("all-minilm", &texts)).await?;
    assert_eq!(got.vectors.len(), 3);
    assert!(got.dimensions > 100, "{}", got.dimensions);
    assert!(got.vectors.iter().all(|v| v.len() == got.dimensions));
    // server/routes.go normalize: unit length.
    assert!(got.vectors.iter().all(|v| (norm(v) - 1.0).abs() < 1e-3));
    assert_eq!(got.vectors[0], got.vectors[2], "equal texts, equal vectors");
    assert_ne!(got.vectors[0], got.vectors[1]);
    assert!(got.prompt_tokens > 10, "{}", got.prompt_tokens);

    // `dimensions` cuts each vector and normalises it again.
    let mut short = request("all-minilm", &texts[..1]);
    short.dimensions = Some(8);
    let cut = provider.embed(short).await?;
    assert_eq!(cut.dimensions, 8);
    assert!((norm(&cut.vectors[0]) - 1.0).abs() < 1e-3);

    // A text over the window (num_ctx 512 here): refused, never silently cut, unless
    // truncation is asked for.
    let long = "word ".repeat(2000);
    let err = provider.embed(request("all-minilm", &[&long])).await.err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::ContextOverflow
                && e.message
                    .contains("the input length exceeds the context length")),
        "{err:?}"
    );
    let mut cut_ok = request("all-minilm", &[&long]);
    cut_ok.truncate = true;
    let cut = provider.embed(cut_ok).await?;
    assert_eq!(cut.vectors.len(), 1);
    assert!(cut.prompt_tokens <= 512, "{}", cut.prompt_tokens);

    // No inputs: no vectors; an unknown model: its 404; too many inputs: refused here.
    assert!(
        provider
            .embed(request("all-minilm", &[]))
            .await?
            .vectors
            .is_empty()
    );
    let err = provider
        .embed(request("nomic-embed-text", &["x"]))
        .await
        .err();
    assert_eq!(err.map(|e| e.kind), Some(ProviderErrorKind::ModelNotFound));
    let many = vec!["x"; MAX_EMBED_INPUTS + 1];
    let err = provider.embed(request("all-minilm", &many)).await.err();
    assert_eq!(err.map(|e| e.kind), Some(ProviderErrorKind::InvalidRequest));
    Ok(())
}

#[tokio::test]
async fn openai_embeddings_are_read_in_index_order() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Status(500)]).await?;
    let provider = OpenAiProvider::new(
        &server.base_url,
        None,
        vec!["text-embedding-3-small".into()],
    )?;
    assert!(provider.can_embed());
    let mut req = request(
        "text-embedding-3-small",
        &["a cat", "two dogs here", "a cat"],
    );
    req.dimensions = Some(4);
    let got = provider.embed(req).await?;
    // The server lists the last input first; each entry's `index` puts it back.
    assert_eq!(got.vectors.len(), 3);
    assert_eq!(got.dimensions, 4);
    assert_eq!(got.vectors[0], vec![5.0, 2.0, 1.0, 97.0]);
    assert_eq!(got.vectors[1][0], 13.0);
    assert_eq!(got.vectors[0], got.vectors[2]);
    assert_eq!(got.prompt_tokens, 7);
    assert_eq!(got.model, "text-embedding-3-small");
    let body = &server.bodies()[0];
    assert_eq!(body["encoding_format"], json!("float"));
    assert_eq!(body["dimensions"], json!(4));
    assert_eq!(body["input"], json!(["a cat", "two dogs here", "a cat"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_pythons_per_token_vectors_are_refused_clearly() -> anyhow::Result<()> {
    // The repository's model has no pooling type, so llama-cpp-python's `/v1/embeddings`
    // answers one vector per token: not an embedding of the text.
    let server = tokio::task::spawn_blocking(|| {
        LlamaServer::start_with_args("smol", &["--embedding", "true"])
    })
    .await??;
    let provider = OpenAiProvider::new(&server.base_url, None, vec![])?;
    let err = provider
        .embed(request("smol", &["hello world"]))
        .await
        .err();
    assert!(
        err.as_ref().is_some_and(
            |e| e.kind == ProviderErrorKind::Protocol && e.message.contains("one per token")
        ),
        "{err:?}"
    );
    Ok(())
}
