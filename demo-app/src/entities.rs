//! The tables of `migrations/`, mapped with `#[derive(Entity)]`.
//!
//! Every foreign key is declared with `references`, which gives each entity
//! a `Relation` constant per key (`Article::AUTHOR`, `Comment::ARTICLE`, ...)
//! to load related rows in batches (`Session::load_parents`,
//! `Session::load_children`) and to filter across relations
//! (`Relation::has`, `Relation::any`), and orders a flush parents first.
//! Every key is also `on_delete = "cascade"`, as in the schema: the schema
//! deletes the rows the session has not loaded, and the declaration makes
//! the session drop the loaded ones too, so that it agrees with the
//! database.

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
    #[orm(primary_key, references = User, on_delete = "cascade")]
    pub follower_id: i64,
    /// The user being followed.
    #[orm(primary_key, references = User, on_delete = "cascade")]
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
    #[orm(references = User, on_delete = "cascade")]
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
    #[orm(primary_key, references = Article, on_delete = "cascade")]
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
    #[orm(primary_key, references = User, on_delete = "cascade")]
    pub user_id: i64,
    /// The favorited `Article`.
    #[orm(primary_key, references = Article, on_delete = "cascade")]
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
    #[orm(references = Article, on_delete = "cascade")]
    pub article_id: i64,
    /// The `User` who wrote it.
    #[orm(references = User, on_delete = "cascade")]
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
