//! The JSON shapes of responses, and building them from entities with their
//! relations batch-loaded (see `loaders`).

use chrono::{DateTime, SecondsFormat, Utc};
use orm_core::{Session, Tracked};
use serde::Serialize;

use crate::entities::{Article, Comment, User};
use crate::loaders;

/// RealWorld's timestamp format: ISO 8601 in UTC with milliseconds.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The logged-in user, with a token.
#[derive(Serialize, Debug)]
pub struct UserView {
    /// E-mail address.
    pub email: String,
    /// A JWT for `Authorization: Token ...`.
    pub token: String,
    /// User name.
    pub username: String,
    /// Biography, or null.
    pub bio: Option<String>,
    /// Image URL, or null.
    pub image: Option<String>,
}

impl UserView {
    /// The view of `user`, with `token`.
    pub fn new(user: &User, token: String) -> Self {
        UserView {
            email: user.email.clone(),
            token,
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
        }
    }
}

/// A user as others see them.
#[derive(Serialize, Debug)]
pub struct ProfileView {
    /// User name.
    pub username: String,
    /// Biography, or null.
    pub bio: Option<String>,
    /// Image URL, or null.
    pub image: Option<String>,
    /// Whether the requesting user follows them (false when anonymous).
    pub following: bool,
}

impl ProfileView {
    /// The view of `user`.
    pub fn new(user: &User, following: bool) -> Self {
        ProfileView { username: user.username.clone(), bio: user.bio.clone(), image: user.image.clone(), following }
    }
}

/// An article with its tags, favorites and author.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ArticleView {
    /// The URL key.
    pub slug: String,
    /// Title.
    pub title: String,
    /// Summary.
    pub description: String,
    /// The text; left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Tags, in alphabetical order.
    pub tag_list: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Whether the requesting user favorited it.
    pub favorited: bool,
    /// How many users favorited it.
    pub favorites_count: i64,
    /// Its author.
    pub author: ProfileView,
}

/// A comment with its author.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CommentView {
    /// The comment's id.
    pub id: i64,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// The text.
    pub body: String,
    /// Its author.
    pub author: ProfileView,
}

/// Whether article views carry the body (single articles do, lists don't).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    /// Include `body`.
    Included,
    /// Leave `body` out.
    Omitted,
}

/// Views of `articles`, in order, as seen by `viewer`. Costs a constant
/// number of statements whatever the number of articles: authors, tags and
/// favorite counts, plus the viewer's favorites and follows when there is
/// a viewer (fewer when the identity map already has the rows).
pub async fn articles(
    session: &mut Session,
    articles: &[Tracked<Article>],
    viewer: Option<i64>,
    body: Body,
) -> orm_core::Result<Vec<ArticleView>> {
    if articles.is_empty() {
        return Ok(Vec::new());
    }
    let articles: Vec<Article> = articles.iter().map(Tracked::get).collect();
    let ids: Vec<i64> = articles.iter().map(|article| article.id).collect();
    let author_ids = loaders::distinct(articles.iter().map(|article| article.author_id));

    let authors = loaders::users(session, &author_ids).await?;
    let mut tags = loaders::tags(session, &ids).await?;
    let counts = loaders::favorite_counts(session, &ids).await?;
    let favorited = loaders::favorited(session, viewer, &ids).await?;
    let following = loaders::followed(session, viewer, &author_ids).await?;

    Ok(articles
        .into_iter()
        .filter_map(|article| {
            // Absent only if the author was deleted meanwhile.
            let author = authors.get(&article.author_id)?;
            Some(ArticleView {
                tag_list: tags.remove(&article.id).unwrap_or_default(),
                favorited: favorited.contains(&article.id),
                favorites_count: counts.get(&article.id).copied().unwrap_or(0),
                author: ProfileView::new(author, following.contains(&author.id)),
                created_at: timestamp(article.created_at),
                updated_at: timestamp(article.updated_at),
                body: (body == Body::Included).then_some(article.body),
                slug: article.slug,
                title: article.title,
                description: article.description,
            })
        })
        .collect())
}

/// The view of one article.
pub async fn article(
    session: &mut Session,
    article: &Tracked<Article>,
    viewer: Option<i64>,
) -> orm_core::Result<Option<ArticleView>> {
    Ok(articles(session, std::slice::from_ref(article), viewer, Body::Included).await?.pop())
}

/// Views of `comments`, in order, as seen by `viewer`: authors and the
/// viewer's follows, one statement each at most.
pub async fn comments(
    session: &mut Session,
    comments: &[Tracked<Comment>],
    viewer: Option<i64>,
) -> orm_core::Result<Vec<CommentView>> {
    if comments.is_empty() {
        return Ok(Vec::new());
    }
    let comments: Vec<Comment> = comments.iter().map(Tracked::get).collect();
    let author_ids = loaders::distinct(comments.iter().map(|comment| comment.author_id));
    let authors = loaders::users(session, &author_ids).await?;
    let following = loaders::followed(session, viewer, &author_ids).await?;
    Ok(comments
        .into_iter()
        .filter_map(|comment| {
            let author = authors.get(&comment.author_id)?;
            Some(CommentView {
                id: comment.id,
                created_at: timestamp(comment.created_at),
                updated_at: timestamp(comment.updated_at),
                body: comment.body,
                author: ProfileView::new(author, following.contains(&author.id)),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let time = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
        assert_eq!(timestamp(time), "2024-05-06T07:08:09.000Z");
    }
}
