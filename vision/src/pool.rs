//! The bounded inference pool: a fixed number of worker threads, each owning its models (ONNX
//! Runtime sessions run with `&mut self`), fed through a queue of fixed depth. When the queue is
//! full a job is refused at once ([`PoolError::Busy`]): the HTTP layer answers 429 with
//! `Retry-After` instead of letting requests pile up behind slow inference.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use tokio::sync::oneshot;

use crate::face::{FaceEngine, FaceError};
use crate::models::ModelError;
use crate::ocr::Engine;

/// What a worker owns: the OCR sessions and a face engine (dlib's detectors and network are not
/// `Sync` either).
pub struct Models {
    pub ocr: Engine,
    pub face: FaceEngine,
}

type Job = Box<dyn FnOnce(&mut Models) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("every worker is busy and the queue is full")]
    Busy,
    #[error("the worker stopped")]
    Gone,
}

/// Pool sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads, each with its own models.
    pub workers: usize,
    /// Threads one job may use: ONNX Runtime's intra-op threads per model, and with 2 or more a
    /// face comparison reads its two images at once (a second face detector and encoder per worker).
    pub threads: usize,
    /// Jobs waiting beyond those running.
    pub queue: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            threads: 2,
            queue: 4,
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    tx: SyncSender<Job>,
    in_flight: Arc<AtomicUsize>,
    config: PoolConfig,
}

impl Pool {
    /// Loads one set of models per worker and starts the workers.
    ///
    /// # Errors
    /// A model that cannot be loaded.
    pub fn start(dir: &Path, config: PoolConfig) -> Result<Self, ModelError> {
        let workers = config.workers.max(1);
        // The in-flight count is the gate (workers + queue). The channel holds as many, so a job
        // admitted by the count is never refused by the channel: with `queue: 0` a rendezvous
        // channel refused the next job whenever its worker was not yet back in `recv`.
        let (tx, rx) = sync_channel::<Job>(workers + config.queue);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..workers {
            let face = FaceEngine::load_threads(dir, config.threads).map_err(|e| match e {
                FaceError::Model { file, reason } => ModelError::Load { file, reason },
                other => ModelError::Load {
                    file: "dlib models".into(),
                    reason: other.to_string(),
                },
            })?;
            let mut models = Models {
                ocr: Engine::load(dir, config.threads.max(1))?,
                face,
            };
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("vision-worker-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut models),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| ModelError::Load {
                    file: "worker thread".into(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            tx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            config,
        })
    }

    #[must_use]
    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Jobs queued or running.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Runs `f` on a worker, or refuses at once when workers and queue are all taken.
    ///
    /// # Errors
    /// [`PoolError::Busy`] when full; [`PoolError::Gone`] when the worker died.
    pub async fn run<R, F>(&self, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Models) -> R + Send + 'static,
    {
        // workers + queue jobs at most; a job counts from here until its answer is sent
        let limit = self.config.workers.max(1) + self.config.queue;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(PoolError::Busy);
        }
        let (done, answer) = oneshot::channel();
        let counter = Arc::clone(&self.in_flight);
        let job: Job = Box::new(move |m| {
            let r = f(m);
            counter.fetch_sub(1, Ordering::AcqRel);
            let _ = done.send(r);
        });
        match self.tx.try_send(job) {
            Ok(()) => answer.await.map_err(|_| PoolError::Gone),
            Err(TrySendError::Full(_)) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(PoolError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(PoolError::Gone)
            }
        }
    }
}
