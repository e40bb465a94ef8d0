//! Pulls: `POST /api/pull` read as NDJSON, each line with the progress of all layers
//! summed, so a progress bar never goes backwards.
//!
//! The daemon downloads a model's layers one after another (`server/images.go`
//! `PullModel`: the manifest's layers, then the config blob), and reports each on its own
//! (`server/download.go`: `pulling <12 hex>`, that layer's `digest`, `total` and
//! `completed`; a layer already on disk is one line with `completed` = `total`). So the
//! `completed` of the lines starts again from 0 at every layer. [`Progress`] keeps the
//! latest figures per digest and sums them: [`PullProgress::total_bytes`] is the sum of
//! the layers' sizes seen so far, [`PullProgress::completed_bytes`] the sum of their
//! downloaded bytes, which never decreases. The total grows as layers appear (the daemon
//! announces no layer before it starts it).

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use nexus_engine::provider::{ProviderError, ProviderErrorKind};
use tokio_util::codec::{FramedRead, LinesCodec};

use super::wire;
use crate::http::{self, classify_wire};

/// Most layers one pull may report (a model has a handful; a safetensors model some
/// hundreds): past it the daemon is not answering a pull, and the stream fails.
pub const MAX_LAYERS: usize = 4096;

/// The progress of a pull ([`super::OllamaProvider::pull`]).
pub type PullStream = Pin<Box<dyn Stream<Item = Result<PullProgress, ProviderError>> + Send>>;

/// One progress line of [`super::OllamaProvider::pull`] (Ollama's docs/api.md, "Pull a
/// Model"), with the sums over all layers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    /// The daemon's status text (`pulling manifest`, `pulling <digest>`, `verifying
    /// sha256 digest`, `writing manifest`, `success`).
    pub status: String,
    /// The layer this line is about, when downloading (`sha256:<hex>`).
    pub digest: Option<String>,
    /// This layer's size, bytes, when downloading.
    pub layer_total_bytes: Option<u64>,
    /// Bytes of this layer downloaded so far (starts from 0 at each layer).
    pub layer_completed_bytes: Option<u64>,
    /// Sizes of all layers seen so far, summed, bytes (0 before the first layer).
    pub total_bytes: u64,
    /// Bytes of all layers downloaded so far, summed: never less than on an earlier
    /// line.
    pub completed_bytes: u64,
    /// Layers seen so far.
    pub layers: usize,
}

/// The running sums of a pull: per digest, the layer's size and the most of it
/// downloaded.
#[derive(Debug, Default)]
pub struct Progress {
    layers: BTreeMap<String, (u64, u64)>,
}

impl Progress {
    /// Takes one line of the daemon's and returns it with the sums.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] past [`MAX_LAYERS`] digests.
    pub fn line(
        &mut self,
        status: String,
        digest: Option<String>,
        total: Option<u64>,
        completed: Option<u64>,
    ) -> Result<PullProgress, ProviderError> {
        if let Some(d) = digest.as_ref().filter(|d| !d.is_empty()) {
            if !self.layers.contains_key(d) && self.layers.len() >= MAX_LAYERS {
                return Err(ProviderError::new(
                    ProviderErrorKind::Protocol,
                    format!("the Ollama pull reported more than {MAX_LAYERS} layers"),
                ));
            }
            let layer = self.layers.entry(d.clone()).or_default();
            if let Some(t) = total {
                layer.0 = t;
            }
            // `completed` is omitted while 0 (`omitempty`); a layer's count never goes
            // back (a repeated digest, the config blob sharing one, is a cache hit).
            layer.1 = layer.1.max(completed.unwrap_or(0));
        }
        let (total_bytes, completed_bytes) =
            self.layers.values().fold((0u64, 0u64), |(t, c), (lt, lc)| {
                (t.saturating_add(*lt), c.saturating_add(*lc))
            });
        Ok(PullProgress {
            status,
            digest,
            layer_total_bytes: total,
            layer_completed_bytes: completed,
            total_bytes,
            completed_bytes,
            layers: self.layers.len(),
        })
    }
}

/// The progress stream of a pull's NDJSON reply: one item per line, the daemon's
/// `{"error": ...}` line as its classified error (the stream ends there), and an error
/// when the stream ends without `success`.
pub(super) fn progress_stream(resp: reqwest::Response) -> PullStream {
    // Lines arrive every 60 ms for as long as the download takes: no total cap, each
    // line within [`http::EVENT_CAP`].
    let bytes = http::total_capped(resp, usize::MAX).map(|r| r.map_err(std::io::Error::other));
    let lines = FramedRead::new(
        tokio_util::io::StreamReader::new(bytes),
        LinesCodec::new_with_max_length(http::EVENT_CAP),
    );
    let state = Some((lines, Progress::default(), false));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut lines, mut progress, mut succeeded) = state?;
        loop {
            let item = match lines.next().await {
                None if succeeded => return None,
                None => Err(ProviderError::new(
                    ProviderErrorKind::Protocol,
                    "the Ollama pull ended before `success`",
                )),
                Some(Err(e)) => Err(classify_wire(&crate::Error::from(e))),
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => match serde_json::from_str::<wire::ProgressLine>(&line) {
                    Err(e) => Err(ProviderError::new(
                        ProviderErrorKind::Protocol,
                        format!("bad pull line from Ollama: {e}"),
                    )),
                    Ok(l) => match l.error {
                        Some(error) => Err(super::classify_message(&error)),
                        None => {
                            succeeded |= l.status == "success";
                            progress.line(l.status, l.digest, l.total, l.completed)
                        }
                    },
                },
            };
            let next = item.is_ok().then_some((lines, progress, succeeded));
            return Some((item, next));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sums_never_go_back_when_a_new_layer_starts() {
        let mut p = Progress::default();
        let mut line = |d: Option<&str>, t: Option<u64>, c: Option<u64>| {
            p.line("pulling".into(), d.map(str::to_owned), t, c)
                .map(|l| (l.total_bytes, l.completed_bytes, l.layers))
                .ok()
        };
        assert_eq!(line(None, None, None), Some((0, 0, 0)));
        assert_eq!(line(Some("sha256:a"), Some(100), None), Some((100, 0, 1)));
        assert_eq!(
            line(Some("sha256:a"), Some(100), Some(60)),
            Some((100, 60, 1))
        );
        assert_eq!(
            line(Some("sha256:a"), Some(100), Some(100)),
            Some((100, 100, 1))
        );
        // The next layer's count starts at 0: the sum keeps the first layer's bytes.
        assert_eq!(line(Some("sha256:b"), Some(10), None), Some((110, 100, 2)));
        assert_eq!(
            line(Some("sha256:b"), Some(10), Some(4)),
            Some((110, 104, 2))
        );
        // A repeated digest (a cache hit) is not counted twice.
        assert_eq!(
            line(Some("sha256:a"), Some(100), Some(100)),
            Some((110, 104, 2))
        );
        assert_eq!(line(None, None, None), Some((110, 104, 2)));
    }
}
