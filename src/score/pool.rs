//! A small pool of threads for running rules. Scoring is CPU-bound and
//! blocking, so it runs off the async executor, on a fixed number of threads:
//! more threads than cores would only add memory (each thread keeps its own
//! allocator heap) and context switches.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Clone)]
pub struct ScoringPool {
    jobs: mpsc::Sender<Job>,
}

/// The pool ran a job that panicked (or the pool is gone).
#[derive(Debug, thiserror::Error)]
#[error("the scoring pool could not run the job")]
pub struct PoolError;

impl ScoringPool {
    /// Starts `threads` worker threads; they stop when the last handle is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("scoring-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not running it.
                        let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Twice the cores (at least 4): enough that a slow rule on one request
    /// does not hold up the others, few enough to keep memory flat.
    pub fn default_size() -> usize {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_mul(2)
            .max(4)
    }

    /// Runs `job` on the pool and waits for its result without blocking the
    /// async executor.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            if let Ok(value) = outcome {
                let _ = reply.send(value);
            }
        });
        self.jobs.send(job).map_err(|_| PoolError)?;
        result.await.map_err(|_| PoolError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        let pool = ScoringPool::new(2).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        assert!(pool.run(|| -> u32 { panic!("rule engine bug") }).await.is_err());
        let results = futures_util::future::join_all((0..10).map(|i| pool.run(move || i * 2))).await;
        assert_eq!(results.into_iter().map(Result::unwrap).sum::<i32>(), 90);
    }
}
