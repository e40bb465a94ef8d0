//! Providers as configuration, end to end: a `providers.yaml` with three
//! OpenAI-compatible endpoints (three real llama-cpp-python servers, each started with
//! its own API key) and Anthropic (a loopback server following Anthropic's documented
//! streaming events), each used by name in one workflow, the keys read by name from the
//! keychain (a process-local keychain: no Secret Service runs on a headless machine).

use std::sync::Arc;

use nexus_app::keys::{ProcessSecrets, SecretStore, ToolSecrets, secret_account};
use nexus_app::setup::ProviderSettings;
use nexus_engine::events::RunStatus;
use nexus_tests::LlamaServer;
use nexus_tests::anthropic::AnthropicServer;

async fn llama(alias: &'static str, key: &'static str) -> anyhow::Result<LlamaServer> {
    tokio::task::spawn_blocking(move || LlamaServer::start_with_args(alias, &["--api_key", key]))
        .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_openai_compatible_endpoints_and_anthropic_each_serve_the_step_that_names_it()
-> anyhow::Result<()> {
    let one = llama("smol", "key-one").await?;
    let two = llama("smol", "key-two").await?;
    let three = llama("smol", "key-three").await?;
    let claude = AnthropicServer::start(
        "key-claude",
        "claude-3-5-haiku-latest",
        "Hello from Claude.",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("providers.yaml");
    std::fs::write(
        &file,
        format!(
            "providers:\n  - id: openai@one\n    url: {}\n    key: one\n    models: [smol]\n  - id: openai@two\n    url: {}\n    key: two\n    models: [smol]\n  - id: openai@three\n    url: {}\n    key: three\n  - id: anthropic@team\n    url: {}\n    key: claude\n    models: [claude-3-5-haiku-latest]\n",
            one.base_url, two.base_url, three.base_url, claude.url
        ),
    )?;
    let keychain = Arc::new(ProcessSecrets::default());
    for (name, key) in [
        ("one", "key-one"),
        ("two", "key-two"),
        ("three", "key-three"),
        ("claude", "key-claude"),
    ] {
        keychain.set(&secret_account(name), key)?;
    }
    let settings = ProviderSettings {
        providers_file: Some(file),
        secrets: Some(Arc::new(ToolSecrets::new(keychain))),
        ollama_url: Some(format!("http://127.0.0.1:{}", nexus_tests::free_port()?)),
        ..ProviderSettings::default()
    };
    let store = nexus_app::runs::open_store(&dir.path().join("nexus.db")).await?;
    let engine = nexus_app::runs::engine(Arc::clone(&store), &settings, 4).await?;
    let ids: Vec<&str> = engine.providers().iter().map(|p| p.id()).collect();
    assert_eq!(
        ids,
        [
            "openai@one",
            "openai@two",
            "openai@three",
            "anthropic@team",
            "ollama",
            "embedded"
        ],
        "the file's providers in order, then the environment's Ollama (the file has none) and the embedded model; no environment OpenAI provider"
    );
    let wf = "id: four\nsteps:\n  - {id: a, kind: llm, model: openai@one:smol, prompt: Say hi., max_tokens: 6, retry: {max_attempts: 1}}\n  - {id: b, kind: llm, model: openai@two:smol, prompt: Say hi., max_tokens: 6, retry: {max_attempts: 1}}\n  - {id: c, kind: llm, model: openai@three:smol, prompt: Say hi., max_tokens: 6, retry: {max_attempts: 1}}\n  - {id: d, kind: llm, model: anthropic@team:claude-3-5-haiku-latest, prompt: Say hi., max_tokens: 16, retry: {max_attempts: 1}}\n";
    let plan = Arc::new(
        nexus_engine::load_str(wf, Some("four.yaml"))
            .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?,
    );
    let report = nexus_app::runs::execute(
        &engine,
        &store,
        plan,
        Default::default(),
        Default::default(),
    )
    .await?;
    let stored = store.get_run(&report.run_id).await?;
    nexus_tests::assert_steps_succeeded(&stored);
    for s in &stored.steps {
        assert!(s.fallbacks.is_empty(), "{}: {:?}", s.step_id, s.fallbacks);
    }
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let model = |id: &str| {
        stored
            .steps
            .iter()
            .find(|s| s.step_id == id)
            .and_then(|s| s.model.clone())
    };
    assert_eq!(model("a").as_deref(), Some("openai@one:smol"));
    assert_eq!(model("b").as_deref(), Some("openai@two:smol"));
    assert_eq!(model("c").as_deref(), Some("openai@three:smol"));
    assert_eq!(
        model("d").as_deref(),
        Some("anthropic@team:claude-3-5-haiku-latest")
    );
    let d = stored.steps.iter().find(|s| s.step_id == "d");
    assert_eq!(
        d.and_then(|s| s.output.as_deref()),
        Some("Hello from Claude.")
    );
    let bodies = claude.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["model"], "claude-3-5-haiku-latest");
    assert_eq!(bodies[0]["messages"][0]["role"], "user");
    Ok(())
}

#[tokio::test]
async fn a_providers_file_naming_a_missing_key_stops_with_the_file_and_the_fix()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("providers.yaml");
    std::fs::write(
        &file,
        "providers:\n  - id: openai@groq\n    url: http://127.0.0.1:9/v1\n    key: groq\n",
    )?;
    let settings = ProviderSettings {
        providers_file: Some(file.clone()),
        secrets: Some(Arc::new(ToolSecrets::new(Arc::new(
            ProcessSecrets::default(),
        )))),
        ..ProviderSettings::default()
    };
    let store = nexus_app::runs::open_store(&dir.path().join("nexus.db")).await?;
    let err = match nexus_app::runs::engine(store, &settings, 2).await {
        Ok(_) => anyhow::bail!("an engine was built without the key"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("provider `openai@groq`: the key `groq` is not set"),
        "{err}"
    );
    assert!(err.contains("nexus secret set groq"), "{err}");
    Ok(())
}
