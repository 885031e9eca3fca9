//! How a session runs its [`Events`] around its flushes, its commit and
//! its rollback. Only sessions with hooks come here: without, flush and
//! commit go straight to the unit of work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::events::{Events, HookError, Seen};
use crate::flush::{self, FlushEnd};
use crate::session::Session;
use crate::stats::SessionStats;

/// How many passes the entity hooks of one flush may make over work that
/// hooks keep adding, and how many flushes one commit may make for what
/// `after_flush` hooks keep adding, before the session gives up (as
/// SQLAlchemy gives up after 100 flushes in one commit).
const MAX_ROUNDS: usize = 100;

/// Marks a session's hooks as running until dropped, also when the
/// future running them is dropped midway: the session must not refuse
/// every later flush because a cancelled one never reset the mark.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The error of a hook that refused.
fn refused(hook: &'static str) -> impl Fn(HookError) -> Error {
    move |source| Error::Hook { hook, entity: None, source }
}

impl Session {
    /// Whether the session's hooks are running: it neither autoflushes
    /// nor flushes then.
    pub(crate) fn in_hooks(&self) -> bool {
        self.hooks_running.as_ref().is_some_and(|running| running.load(Ordering::Acquire))
    }

    fn enter_hooks(&mut self) -> Running {
        let running = self.hooks_running.get_or_insert_with(Arc::default).clone();
        running.store(true, Ordering::Release);
        Running(running)
    }

    /// [`Session::flush`] with hooks: the before hooks if there is work,
    /// the flush, and the `after_flush` hooks if there was work.
    pub(crate) async fn flush_with_events(&mut self) -> Result<()> {
        if self.in_hooks() {
            return Err(Error::FlushInHook);
        }
        let events = self.events.clone();
        let has_work = self.registries.pending_count() > 0;
        if has_work {
            self.before_flush_hooks(&events).await?;
        }
        // After the hooks, which may have added or changed entities.
        self.check_tenant_writes()?;
        flush::flush(&mut self.registries, &mut self.connection, &mut self.stats, FlushEnd::KeepOpen).await?;
        if has_work {
            let _running = self.enter_hooks();
            for hooks in events.session_hooks() {
                hooks.after_flush(self).await.map_err(refused("after_flush"))?;
            }
        }
        Ok(())
    }

    /// Every `before_flush`, then the entity hooks on the pending work,
    /// again on what they add until they add nothing more.
    async fn before_flush_hooks(&mut self, events: &Events) -> Result<()> {
        let _running = self.enter_hooks();
        for hooks in events.session_hooks() {
            hooks.before_flush(self).await.map_err(refused("before_flush"))?;
        }
        let entity_hooks: Vec<_> = events.entity_hooks().collect();
        if entity_hooks.is_empty() {
            return Ok(());
        }
        let mut seen: Vec<Seen> = entity_hooks.iter().map(|_| Seen::default()).collect();
        for _ in 0..MAX_ROUNDS {
            let mut ran = false;
            for (hooks, seen) in entity_hooks.iter().zip(&mut seen) {
                ran |= hooks.run(self, seen).await?;
            }
            if !ran {
                return Ok(());
            }
        }
        Err(Error::Hook {
            hook: "before_insert",
            entity: None,
            source: format!("entity hooks kept adding work to the flush: over {MAX_ROUNDS} passes").into(),
        })
    }

    /// [`Session::commit`] with hooks. With session hooks, flushes (running
    /// every hook) until no work is left, then sends `COMMIT` alone, so
    /// `after_flush` hooks write inside the transaction; with entity hooks
    /// only, runs them and commits with the flush, in one round trip as
    /// without hooks. Then `after_commit`, or `after_rollback` if the
    /// transaction rolled back, and neither if its outcome is unknown.
    pub(crate) async fn commit_with_events(&mut self) -> Result<()> {
        let events = self.events.clone();
        let prepared = self.prepare_commit(&events).await.and_then(|()| self.check_tenant_writes());
        if let Err(error) = prepared {
            if let Err(rollback) = self.connection.finish("ROLLBACK", &mut self.stats).await {
                tracing::warn!(%rollback, "rollback after a failed commit failed");
            }
            after_rollback_logged(&events).await;
            return Err(error);
        }
        match flush::flush(&mut self.registries, &mut self.connection, &mut self.stats, FlushEnd::Commit).await {
            Ok(()) => {
                after_commit_hooks(&events, &self.stats).await.map_err(|error| Error::AfterCommit(Box::new(error)))
            }
            Err(error @ Error::CommitUnknown(_)) => Err(error),
            Err(error @ Error::AfterCommit(_)) => {
                // Committed: what could not be applied is the objects' problem.
                if let Err(hook) = after_commit_hooks(&events, &self.stats).await {
                    tracing::warn!(%hook, "after_commit hook failed");
                }
                Err(error)
            }
            Err(error) => {
                after_rollback_logged(&events).await;
                Err(error)
            }
        }
    }

    async fn prepare_commit(&mut self, events: &Events) -> Result<()> {
        if events.session_hooks().next().is_none() {
            if self.registries.pending_count() > 0 {
                self.before_flush_hooks(events).await?;
            }
            return Ok(());
        }
        for _ in 0..MAX_ROUNDS {
            if self.registries.pending_count() == 0 {
                return Ok(());
            }
            self.flush_with_events().await?;
        }
        Err(Error::Hook {
            hook: "after_flush",
            entity: None,
            source: format!("after_flush hooks kept adding work: over {MAX_ROUNDS} flushes in one commit").into(),
        })
    }
}

/// Every `after_commit`, even after one failed; the first error.
async fn after_commit_hooks(events: &Events, stats: &SessionStats) -> Result<()> {
    let mut failed = Ok(());
    for hooks in events.session_hooks() {
        if let Err(source) = hooks.after_commit(stats).await {
            if failed.is_ok() {
                failed = Err(refused("after_commit")(source));
            }
        }
    }
    failed
}

/// Every `after_rollback`, even after one failed; the first error.
pub(crate) async fn after_rollback_hooks(events: &Events) -> Result<()> {
    let mut failed = Ok(());
    for hooks in events.session_hooks() {
        if let Err(source) = hooks.after_rollback().await {
            if failed.is_ok() {
                failed = Err(refused("after_rollback")(source));
            }
        }
    }
    failed
}

/// `after_rollback` when another error is what the caller gets.
pub(crate) async fn after_rollback_logged(events: &Events) {
    if let Err(hook) = after_rollback_hooks(events).await {
        tracing::warn!(%hook, "after_rollback hook failed");
    }
}
