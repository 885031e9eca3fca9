//! [`PlanCacheMode`]: whether the server plans a prepared statement afresh
//! for each run's parameters or reuses one generic plan, set on every
//! connection a [`Database`](crate::Database) opens.

use std::str::FromStr;

use crate::error::{Error, Result};

/// How PostgreSQL plans the statements a connection keeps prepared: its
/// `plan_cache_mode` setting (PostgreSQL 12 and later). Set it with
/// [`DatabaseConfig::plan_cache_mode`](crate::DatabaseConfig::plan_cache_mode):
/// every connection the pools open (the primary's and the replicas') then
/// carries it as a startup option, which costs no statement and no round
/// trip.
///
/// By default PostgreSQL plans the first five runs of a prepared statement
/// for their parameters, then compares the estimated cost of one generic
/// plan with those custom plans' average, and plans every later run for
/// its parameters again whenever the generic plan looks costlier. For the
/// statements a web request sends most it always does: a page
/// (`LIMIT $1 OFFSET $2`, for which a generic plan assumes a tenth of the
/// table) and a lookup of a few keys (`id = ANY($1)`, for which it assumes
/// ten of them) estimate lower with their values known, though the plan
/// that comes out is the same index scan every time. The planning is then
/// paid at each run: in the demo app under its load mix it was a fifth
/// to a third of the time the server spent on the statements of a request
/// (see `docs/performance.md`). [`ForceGeneric`](Self::ForceGeneric) plans
/// each statement once per connection: the demo then served 12% more
/// requests a second, with 16% less of the server's CPU a request.
///
/// A generic plan cannot adapt to the values: a filter on a column whose
/// values are skewed (`status = $1`, where one status is most of the
/// table) may want an index for one value and a sequential scan for
/// another, and one plan serves both. And it is kept until the statistics
/// of a table it reads change (an `ANALYZE`): one made while a table was
/// a few pages may be a sequential scan that stays while the table grows.
/// Choose it for statements that look rows up by keys, pages and
/// relations, and check the plans of the others with
/// `SET plan_cache_mode = force_generic_plan` and `EXPLAIN EXECUTE` of each
/// prepared statement. The guide's chapter on deploying has more.
///
/// ```
/// use orm_core::{Database, DatabaseConfig, PlanCacheMode};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # if orm_tests::skip_via_pgbouncer("the mode is a startup option, which a pooler refuses") { return Ok(()); }
/// let mut config = DatabaseConfig::from_url(test_db.url())?;
/// config.plan_cache_mode = Some(PlanCacheMode::ForceGeneric);
/// let db = Database::with_config(config)?;
///
/// let mut session = db.session();
/// let rows = session.query_rows("SELECT current_setting('plan_cache_mode')", &[]).await?;
/// assert_eq!(rows[0].get::<_, String>(0), "force_generic_plan");
///
/// // Read from an application's setting, by PostgreSQL's names:
/// assert_eq!("force_generic_plan".parse::<PlanCacheMode>()?, PlanCacheMode::ForceGeneric);
/// assert!("generic".parse::<PlanCacheMode>().is_err());
/// # Ok(()) }
/// ```
///
/// It has no effect on statements that are not kept prepared, so it cannot
/// be combined with [`StatementMode::Unnamed`](crate::StatementMode::Unnamed)
/// (where every statement is planned at each run, and a pooler in
/// transaction mode would refuse the startup option): set it on the
/// database role instead (`ALTER ROLE app SET plan_cache_mode = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanCacheMode {
    /// `auto`: PostgreSQL's own choice between custom and generic plans,
    /// described above. Sets it explicitly, over a role's or database's
    /// setting.
    Auto,
    /// `force_generic_plan`: each prepared statement is planned once, for
    /// any parameters, and the plan is reused until the tables it reads
    /// change shape or statistics.
    ForceGeneric,
    /// `force_custom_plan`: every run is planned for its parameters, as
    /// unprepared SQL is.
    ForceCustom,
}

impl PlanCacheMode {
    /// The setting's value, as PostgreSQL names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanCacheMode::Auto => "auto",
            PlanCacheMode::ForceGeneric => "force_generic_plan",
            PlanCacheMode::ForceCustom => "force_custom_plan",
        }
    }

    /// Adds the mode to the options a connection sends at startup, after
    /// those the connection string gave, so that it wins over a
    /// `-c plan_cache_mode=...` among them.
    pub(crate) fn add_to(self, postgres: &mut tokio_postgres::Config) {
        let option = format!("-c plan_cache_mode={}", self.as_str());
        let options = match postgres.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {option}"),
            _ => option,
        };
        postgres.options(&options);
    }
}

/// Reads `auto`, `force_generic_plan` or `force_custom_plan`, PostgreSQL's
/// names for the modes (from an application's environment, say).
impl FromStr for PlanCacheMode {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        [PlanCacheMode::Auto, PlanCacheMode::ForceGeneric, PlanCacheMode::ForceCustom]
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| {
                Error::Config(format!(
                    "plan_cache_mode must be `auto`, `force_generic_plan` or `force_custom_plan`, not `{value}`"
                ))
            })
    }
}
