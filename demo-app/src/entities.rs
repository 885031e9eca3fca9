//! The tables of `migrations/`, mapped with `#[derive(Entity)]`.
//!
//! Relationships are plain foreign-key fields: the ORM has no relationship
//! loading yet, so `loaders` batch-loads related rows, one statement per
//! relation.

use chrono::{DateTime, Utc};
use orm_core::Entity;

/// A registered user.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
pub struct User {
    /// Assigned by the database.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// Unique, shown in profiles and URLs.
    pub username: String,
    /// Unique, used to log in.
    pub email: String,
    /// An argon2 PHC string.
    pub password_hash: String,
    /// `None` rather than an empty string.
    pub bio: Option<String>,
    /// An image URL; `None` rather than an empty string.
    pub image: Option<String>,
}

/// `follower_id` follows `followee_id`.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "follows")]
pub struct Follow {
    /// The user who follows.
    #[orm(primary_key)]
    pub follower_id: i64,
    /// The user being followed.
    #[orm(primary_key)]
    pub followee_id: i64,
}

/// An article; its tags, favorites and comments are rows of their own.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "articles")]
pub struct Article {
    /// Assigned by the database.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// Unique, derived from the title.
    pub slug: String,
    /// The title.
    pub title: String,
    /// A short summary.
    pub description: String,
    /// The text, in Markdown.
    pub body: String,
    /// The `User` who wrote it.
    pub author_id: i64,
    /// When it was created, to the microsecond.
    pub created_at: DateTime<Utc>,
    /// When it was last changed, to the microsecond.
    pub updated_at: DateTime<Utc>,
}

/// One tag of an article.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "article_tags")]
pub struct ArticleTag {
    /// The tagged `Article`.
    #[orm(primary_key)]
    pub article_id: i64,
    /// The tag.
    #[orm(primary_key)]
    pub tag: String,
}

/// `user_id` favorited `article_id`.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "favorites")]
pub struct Favorite {
    /// The `User` who favorited.
    #[orm(primary_key)]
    pub user_id: i64,
    /// The favorited `Article`.
    #[orm(primary_key)]
    pub article_id: i64,
}

/// A comment on an article.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "comments")]
pub struct Comment {
    /// Assigned by the database.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// The `Article` commented on.
    pub article_id: i64,
    /// The `User` who wrote it.
    pub author_id: i64,
    /// The text.
    pub body: String,
    /// When it was created, to the microsecond.
    pub created_at: DateTime<Utc>,
    /// When it was last changed, to the microsecond.
    pub updated_at: DateTime<Utc>,
}

/// The current time as PostgreSQL stores it (to the microsecond), so that
/// what a response shows equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}
