//! Configuration from the environment.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::http::HeaderValue;
use orm_core::{PlanCacheMode, StatementMode};

/// Everything the server reads from the environment at start-up.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL` (required): a `postgres://` URL or a `key=value` string,
    /// whose `sslmode` and `sslrootcert` set TLS as they do for libpq.
    pub database_url: String,
    /// `HOST` (default `127.0.0.1`): the address to listen on.
    pub host: IpAddr,
    /// `PORT` (default 8080; 0 picks a free port, which the start-up log names).
    pub port: u16,
    /// `JWT_SECRET`: the key that signs tokens. When unset, a random one is
    /// generated, with a warning: tokens then stop working at restart.
    pub jwt_secret: String,
    /// Whether `jwt_secret` was generated.
    pub jwt_secret_generated: bool,
    /// `DATABASE_REPLICA_URLS` (default: none): read replicas of the
    /// database, comma-separated, each a URL as `DATABASE_URL` is. With
    /// any, `GET` requests read from them, and a client that wrote reads
    /// its writes (see `orm_core::axum::SessionLayer::route_reads`).
    pub database_replica_urls: Vec<String>,
    /// `DATABASE_MAX_CONNECTIONS` (default 16): the pool's size.
    pub max_connections: usize,
    /// `DATABASE_PLAN_CACHE_MODE` (`auto`, `force_generic_plan` or
    /// `force_custom_plan`): how the server plans the statements each
    /// connection keeps prepared. Default: `force_generic_plan` when the
    /// connection strings keep statements prepared, since every statement
    /// the app sends has the same plan whatever its values (see
    /// `orm_core::PlanCacheMode`); the server's own setting with
    /// `statement_mode=unnamed`, where the mode cannot be set.
    pub plan_cache_mode: Option<PlanCacheMode>,
    /// `REQUEST_TIMEOUT_SECS` (default 30): a handler still running after
    /// this is answered 503 and its session rolled back. It bounds the
    /// handler, not the commit that follows it.
    pub request_timeout: Duration,
    /// `CORS_ORIGINS` (default: none): the web origins whose pages may
    /// call the API from a browser.
    pub cors_origins: CorsOrigins,
}

/// Which browser origins may call the API (CORS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// None: no CORS headers, so browsers allow only pages served from the
    /// API's own origin.
    #[default]
    None,
    /// `*`: any origin. Safe for this API, whose credentials are a token
    /// the page sends explicitly, not a cookie the browser adds.
    Any,
    /// A comma-separated list of origins (`scheme://host[:port]`, as a
    /// browser sends them in `Origin`).
    List(Vec<HeaderValue>),
}

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: String,
}

impl ConfigError {
    /// The variable `name` is wrong, as `problem` says.
    pub fn new(name: &'static str, problem: impl Into<String>) -> Self {
        ConfigError { name, problem: problem.into() }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let database_url = lookup("DATABASE_URL")
            .filter(|url| !url.is_empty())
            .ok_or(ConfigError::new("DATABASE_URL", "is not set"))?;
        // Checked now, by the parser the pool uses (which also takes the
        // ORM's own parameters, sslmode and statement_mode among them), so
        // that a typo is reported as the setting's, before anything
        // connects. Its message does not echo the URL, which may hold a
        // password.
        let primary =
            orm_core::DatabaseConfig::from_url(&database_url).map_err(|error| invalid_url("DATABASE_URL", error))?;
        let mut prepared = primary.statements == StatementMode::Prepared;
        let database_replica_urls: Vec<String> = lookup("DATABASE_REPLICA_URLS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        for url in &database_replica_urls {
            let replica =
                orm_core::ReplicaConfig::from_url(url).map_err(|error| invalid_url("DATABASE_REPLICA_URLS", error))?;
            prepared &= replica.statements == StatementMode::Prepared;
        }
        let plan_cache_mode =
            match lookup("DATABASE_PLAN_CACHE_MODE").filter(|mode| !mode.is_empty()) {
                Some(mode) => Some(mode.parse().map_err(|error: orm_core::Error| {
                    ConfigError::new("DATABASE_PLAN_CACHE_MODE", error.to_string())
                })?),
                None => prepared.then_some(PlanCacheMode::ForceGeneric),
            };
        if let Some(format) =
            lookup("LOG_FORMAT").filter(|format| !format.is_empty() && format != "json" && format != "text")
        {
            return Err(ConfigError::new("LOG_FORMAT", format!("{format:?}: must be json or text")));
        }
        let (jwt_secret, jwt_secret_generated) = match lookup("JWT_SECRET").filter(|s| !s.is_empty()) {
            Some(secret) => (secret, false),
            None => (random_secret(), true),
        };
        Ok(Config {
            database_url,
            database_replica_urls,
            host: parse(&lookup, "HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?,
            port: parse(&lookup, "PORT", 8080)?,
            jwt_secret,
            jwt_secret_generated,
            max_connections: at_least_one(&lookup, "DATABASE_MAX_CONNECTIONS", 16)?,
            plan_cache_mode,
            request_timeout: Duration::from_secs(at_least_one(&lookup, "REQUEST_TIMEOUT_SECS", 30)?),
            cors_origins: cors_origins(lookup("CORS_ORIGINS").as_deref().unwrap_or(""))?,
        })
    }
}

/// The error for a connection string the pool's own parser refused. Its
/// message does not echo the URL, which may hold a password.
fn invalid_url(name: &'static str, error: orm_core::Error) -> ConfigError {
    let message = match error {
        orm_core::Error::Config(message) => message,
        other => other.to_string(),
    };
    let reason = message.strip_prefix("invalid connection string: ").unwrap_or(&message);
    ConfigError::new(name, format!("is not a valid connection string: {reason}"))
}

/// A count that must be positive: a pool of 0 connections would answer
/// every request 503, a timeout of 0 s every request.
fn at_least_one<T>(lookup: &impl Fn(&str) -> Option<String>, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let value = parse(lookup, name, default)?;
    if value < T::from(1) {
        return Err(ConfigError::new(name, format!("must be at least 1, not {value}")));
    }
    Ok(value)
}

/// `CORS_ORIGINS`: empty, `*`, or origins separated by commas.
fn cors_origins(value: &str) -> Result<CorsOrigins, ConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(CorsOrigins::None);
    }
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    let origins = value.split(',').map(str::trim).filter(|origin| !origin.is_empty()).map(|origin| {
        let invalid = |why: &str| ConfigError::new("CORS_ORIGINS", format!("{origin:?} {why}"));
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| invalid("is not an origin: it must start with http:// or https://"))?;
        // A browser's Origin header never has a path, not even "/": an
        // origin written with one would never match.
        if host.is_empty() || host.contains('/') {
            return Err(invalid("is not an origin: scheme://host[:port], with no path or trailing slash"));
        }
        HeaderValue::from_str(origin).map_err(|_| invalid("holds characters a header cannot"))
    });
    Ok(CorsOrigins::List(origins.collect::<Result<_, _>>()?))
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name).filter(|value| !value.is_empty()) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|e| ConfigError::new(name, format!("{value:?}: {e}"))),
    }
}

/// 256 random bits from the operating system's generator (two v4 UUIDs).
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_and_a_generated_secret() {
        let config = config(&[("DATABASE_URL", "postgres://localhost/app")]).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(config.jwt_secret_generated);
        assert_eq!(config.jwt_secret.len(), 64);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.cors_origins, CorsOrigins::None);
        assert_eq!(config.plan_cache_mode, Some(PlanCacheMode::ForceGeneric));
    }

    #[test]
    fn the_plan_cache_mode_is_left_to_the_server_where_statements_are_unnamed() {
        let url = ("DATABASE_URL", "postgres://localhost/app?statement_mode=unnamed");
        assert_eq!(config(&[url]).unwrap().plan_cache_mode, None);
        let replica = ("DATABASE_REPLICA_URLS", "postgres://replica/app?statement_mode=unnamed");
        assert_eq!(config(&[("DATABASE_URL", "postgres://localhost/app"), replica]).unwrap().plan_cache_mode, None);
        // Asked for, it is kept, and the pool refuses it with its reason.
        let asked = config(&[url, ("DATABASE_PLAN_CACHE_MODE", "auto")]).unwrap();
        assert_eq!(asked.plan_cache_mode, Some(PlanCacheMode::Auto));
    }

    #[test]
    fn reads_every_setting() {
        let config = config(&[
            ("DATABASE_URL", "postgres://localhost/app"),
            ("HOST", "0.0.0.0"),
            ("PORT", "3000"),
            ("JWT_SECRET", "s3cret"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("REQUEST_TIMEOUT_SECS", "2"),
            ("CORS_ORIGINS", "http://localhost:3000, https://conduit.example.com"),
            ("LOG_FORMAT", "json"),
            ("DATABASE_PLAN_CACHE_MODE", "force_custom_plan"),
        ])
        .unwrap();
        assert_eq!(config.plan_cache_mode, Some(PlanCacheMode::ForceCustom));
        assert_eq!((config.port, config.max_connections), (3000, 4));
        assert_eq!(config.host.to_string(), "0.0.0.0");
        assert_eq!((config.jwt_secret.as_str(), config.jwt_secret_generated), ("s3cret", false));
        assert_eq!(config.request_timeout, Duration::from_secs(2));
        let origins = ["http://localhost:3000", "https://conduit.example.com"].map(HeaderValue::from_static);
        assert_eq!(config.cors_origins, CorsOrigins::List(origins.to_vec()));
        let any = self::config(&[("DATABASE_URL", "postgres://localhost/app"), ("CORS_ORIGINS", "*")]).unwrap();
        assert_eq!(any.cors_origins, CorsOrigins::Any);
    }

    #[test]
    fn rejects_a_missing_url_and_a_bad_port() {
        assert_eq!(config(&[]).err().unwrap().to_string(), "DATABASE_URL: is not set");
        let error = config(&[("DATABASE_URL", "postgres://localhost/app"), ("PORT", "http")]).err().unwrap();
        assert!(error.to_string().starts_with("PORT: \"http\""), "{error}");
    }

    /// The message of the error for one bad setting, beside a valid URL.
    fn refused(name: &str, value: &str) -> String {
        let url = ("DATABASE_URL", "postgres://localhost/app");
        let vars = if name == "DATABASE_URL" { vec![(name, value)] } else { vec![url, (name, value)] };
        config(&vars).err().map(|error| error.to_string()).unwrap_or_default()
    }

    #[test]
    fn refuses_invalid_settings_naming_the_variable() {
        assert_eq!(refused("DATABASE_MAX_CONNECTIONS", "0"), "DATABASE_MAX_CONNECTIONS: must be at least 1, not 0");
        assert!(refused("DATABASE_MAX_CONNECTIONS", "-1").starts_with("DATABASE_MAX_CONNECTIONS: \"-1\""));
        assert_eq!(refused("REQUEST_TIMEOUT_SECS", "0"), "REQUEST_TIMEOUT_SECS: must be at least 1, not 0");
        assert!(refused("HOST", "localhost").starts_with("HOST: \"localhost\""));
        assert!(refused("PORT", "65536").starts_with("PORT: \"65536\""));
        assert_eq!(refused("LOG_FORMAT", "xml"), "LOG_FORMAT: \"xml\": must be json or text");
        let mode = refused("DATABASE_PLAN_CACHE_MODE", "generic");
        assert!(mode.starts_with("DATABASE_PLAN_CACHE_MODE: ") && mode.contains("`generic`"), "{mode}");
        let url = refused("DATABASE_URL", "postgres://user:hunter2@host:port/db");
        assert_eq!(url, "DATABASE_URL: is not a valid connection string: invalid value for option `port`");
        assert!(!url.contains("hunter2"), "the password is not echoed: {url}");
        for origin in ["localhost:3000", "http://localhost:3000/", "https://", "ftp://x"] {
            let error = refused("CORS_ORIGINS", origin);
            assert!(error.starts_with(&format!("CORS_ORIGINS: {origin:?} is not an origin")), "{error}");
        }
    }
}
