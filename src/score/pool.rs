//! A small pool of threads for running rules. Scoring is CPU-bound and
//! blocking, so it runs off the async executor, on a fixed number of threads:
//! more threads than cores would only add memory (each thread keeps its own
//! allocator heap) and context switches.

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Clone)]
pub struct ScoringPool {
    jobs: crossbeam_channel::Sender<Job>,
}

/// The pool ran a job that panicked (or the pool is gone).
#[derive(Debug, thiserror::Error)]
#[error("the scoring pool could not run the job")]
pub struct PoolError;

impl ScoringPool {
    /// Starts `threads` worker threads; they stop when the last handle is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        // A queue that any number of threads wait on: a job wakes one idle
        // thread. (A std receiver shared behind a mutex woke two per job:
        // the thread that took it, then the next one in line for the lock,
        // only to sleep again; BENCHMARKS.md, session 14.)
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("scoring-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
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

    #[tokio::test]
    async fn a_job_waiting_on_its_thread_does_not_hold_up_the_next() {
        // The first job waits for a signal that only the second job sends:
        // it returns true only if another thread took the second job.
        let pool = ScoringPool::new(2).unwrap();
        let (signal, signalled) = std::sync::mpsc::channel::<()>();
        let waiting = pool.run(move || signalled.recv_timeout(std::time::Duration::from_secs(30)).is_ok());
        let signalling = pool.run(move || signal.send(()).is_ok());
        let (waited, sent) = futures_util::future::join(waiting, signalling).await;
        assert!(sent.unwrap());
        assert!(waited.unwrap(), "the second job never ran beside the first");
    }
}
