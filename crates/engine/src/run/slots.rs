//! Slots: how many requests one model may have in flight
//! ([`crate::provider::Provider::max_concurrency`], or the engine's per-provider
//! override), and how many different models one provider may have in flight
//! ([`crate::provider::Provider::max_loaded_models`]).
//!
//! Invariant: at any time, for each provider with a loaded-models limit `L`, at most `L`
//! of its models hold requests; a request to a model that already holds some joins it
//! without a slot of its own (the daemon serves it with the loaded runner), and the
//! model's provider slot is given back when its last request ends. A request waits for
//! its model's request slot first, then (for the model's first request) a provider slot.
//!
//! Each model counts its demand (requests in flight or waiting for a slot), which the
//! selector reads as the model's load ([`Slots::load`]).
//!
//! So a loaded model whose requests keep coming keeps its provider slot (no reload while
//! it has work), and a waiting model gets one as soon as a loaded model has nothing in
//! flight; a model that is never idle can keep another waiting for as long as it has
//! requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::lock;
use crate::provider::Provider;

/// Every model's and every provider's slots, made on first use.
#[derive(Default)]
pub(super) struct Slots {
    /// By `provider:model`.
    models: Mutex<HashMap<String, Arc<ModelSlot>>>,
    /// By provider id, for providers with a loaded-models limit.
    providers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    /// The slot of model `reference` of `provider`, with `limit` requests at once (at
    /// least 1); made on first use, with the provider's loaded-models limit then.
    pub(super) fn model(
        &self,
        reference: &str,
        provider: &dyn Provider,
        limit: usize,
    ) -> Arc<ModelSlot> {
        let mut models = lock(&self.models);
        if let Some(slot) = models.get(reference) {
            return Arc::clone(slot);
        }
        let loaded = provider.max_loaded_models().map(|n| {
            let mut providers = lock(&self.providers);
            Arc::clone(
                providers
                    .entry(provider.id().to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(n.max(1)))),
            )
        });
        let slot = Arc::new(ModelSlot {
            limit: limit.max(1),
            demand: AtomicUsize::new(0),
            requests: Arc::new(Semaphore::new(limit.max(1))),
            provider: loaded,
            held: Mutex::new(Held::default()),
            joining: tokio::sync::Mutex::new(()),
        });
        models.insert(reference.to_string(), Arc::clone(&slot));
        slot
    }

    /// Each busy model's load: its requests in flight or waiting for a slot, per request
    /// it may serve at once ([`crate::select::SelectorContext::load`]). Idle models are
    /// absent.
    pub(super) fn load(&self) -> HashMap<String, f64> {
        lock(&self.models)
            .iter()
            .filter_map(|(reference, slot)| {
                let demand = slot.demand.load(Ordering::Relaxed);
                (demand > 0).then(|| (reference.clone(), demand as f64 / slot.limit as f64))
            })
            .collect()
    }
}

/// One model's slots.
pub(super) struct ModelSlot {
    /// Requests it may serve at once (at least 1).
    limit: usize,
    /// Requests in flight or waiting for a slot ([`Demand`]).
    demand: AtomicUsize,
    /// The model's own requests in flight.
    requests: Arc<Semaphore>,
    /// The provider's loaded-model slots, when it has a limit.
    provider: Option<Arc<Semaphore>>,
    /// Requests in flight and the provider slot they share.
    held: Mutex<Held>,
    /// Held by the request that takes the provider slot for the model, so a second
    /// request to the model waits for it instead of taking another.
    joining: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    requests: usize,
    provider: Option<OwnedSemaphorePermit>,
}

/// A request counted in its model's demand from when it asks for a slot until its
/// permit is dropped, or its wait is given up (cancelled).
struct Demand(Arc<ModelSlot>);

impl Demand {
    fn new(model: &Arc<ModelSlot>) -> Self {
        model.demand.fetch_add(1, Ordering::Relaxed);
        Demand(Arc::clone(model))
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        self.0.demand.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's place: its model's request slot, and a share of the model's provider
/// slot. Dropping it gives both back.
pub(super) struct SlotPermit {
    _request: OwnedSemaphorePermit,
    model: Arc<ModelSlot>,
    _demand: Demand,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut held = lock(&self.model.held);
        held.requests = held.requests.saturating_sub(1);
        if held.requests == 0 {
            held.provider = None;
        }
    }
}

impl ModelSlot {
    /// Waits for a request slot of the model and, when the model holds no requests yet,
    /// a slot of its provider. Cancel-safe: dropping the future takes nothing.
    ///
    /// # Errors
    /// When a semaphore was closed (never: the engine closes none).
    pub(super) async fn acquire_owned(self: Arc<Self>) -> Result<SlotPermit, AcquireError> {
        let demand = Demand::new(&self);
        let request = Arc::clone(&self.requests).acquire_owned().await?;
        match &self.provider {
            None => lock(&self.held).requests += 1,
            Some(provider) => {
                if !self.join() {
                    let _joining = self.joining.lock().await;
                    if !self.join() {
                        let permit = Arc::clone(provider).acquire_owned().await?;
                        let mut held = lock(&self.held);
                        held.requests = 1;
                        held.provider = Some(permit);
                    }
                }
            }
        }
        Ok(SlotPermit {
            _request: request,
            model: self,
            _demand: demand,
        })
    }

    /// Joins the requests in flight, if there are any.
    fn join(&self) -> bool {
        let mut held = lock(&self.held);
        if held.requests > 0 {
            held.requests += 1;
            true
        } else {
            false
        }
    }
}
