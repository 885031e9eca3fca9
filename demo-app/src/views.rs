//! The JSON shapes of responses, and building them from entities with their
//! relations batch-loaded: a page's authors and tags by the ORM's relation
//! loading, favorite counts and the viewer's favorites and follows by
//! `loaders`, all sent together in one round trip.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use orm_core::{Entity, Load, Relation, Session, Tracked};
use serde::Serialize;

use crate::entities::{Article, ArticleTag, Comment, User};
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

    /// The viewer as the author of what they write, from
    /// [`loaders::viewer`] and [`loaders::followed`] of the viewer alone
    /// (one may follow oneself); `None` if the token's user is gone.
    pub fn own(viewer: &[Tracked<User>], followed: &HashSet<i64>) -> Option<Self> {
        let user = viewer.first()?.read();
        Some(ProfileView::new(&user, followed.contains(&user.id)))
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

impl ArticleView {
    /// The view of `article` by `author`, with its tags in alphabetical
    /// order and its favorites.
    pub fn new(
        article: &Article,
        tag_list: Vec<String>,
        favorited: bool,
        favorites_count: i64,
        author: ProfileView,
        body: Body,
    ) -> Self {
        ArticleView {
            slug: article.slug.clone(),
            title: article.title.clone(),
            description: article.description.clone(),
            body: (body == Body::Included).then(|| article.body.clone()),
            tag_list,
            created_at: timestamp(article.created_at),
            updated_at: timestamp(article.updated_at),
            favorited,
            favorites_count,
            author,
        }
    }
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

impl CommentView {
    /// The view of `comment` by `author`.
    pub fn new(comment: &Comment, author: ProfileView) -> Self {
        CommentView {
            id: comment.id,
            created_at: timestamp(comment.created_at),
            updated_at: timestamp(comment.updated_at),
            body: comment.body.clone(),
            author,
        }
    }
}

/// Whether article views carry the body (single articles do, lists don't).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    /// Include `body`.
    Included,
    /// Leave `body` out.
    Omitted,
}

/// Views of `articles`, in order, as seen by `viewer`. Costs one round trip
/// and a constant number of statements whatever the number of articles,
/// all keyed by the page and sent together: authors (none if the identity
/// map has them all), tags and favorite counts, plus the viewer's
/// favorites, follows and own row when there is a viewer (none for those
/// the identity map has).
pub async fn articles(
    session: &mut Session,
    articles: &[Tracked<Article>],
    viewer: Option<i64>,
    body: Body,
) -> orm_core::Result<Vec<ArticleView>> {
    if articles.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(articles.len());
    let mut author_ids = Vec::with_capacity(articles.len());
    for article in articles {
        let article = article.read();
        ids.push(article.id);
        author_ids.push(article.author_id);
    }
    let counts = loaders::favorite_counts(session, &ids);
    let (_, _, counts, favorited, following, _) = session
        .load_together((
            Load::parents(articles, Article::AUTHOR),
            Load::children(articles, ArticleTag::ARTICLE),
            counts,
            loaders::favorited(viewer, &ids),
            loaders::followed(viewer, &author_ids),
            loaders::viewer(viewer),
        ))
        .await?;

    let mut views = Vec::with_capacity(articles.len());
    for article in articles {
        let Some(author) = loaded_parent(session, article, Article::AUTHOR)? else { continue };
        let mut tag_list: Vec<String> =
            session.children(article, ArticleTag::ARTICLE)?.iter().map(|tag| tag.read().tag.clone()).collect();
        tag_list.sort_unstable();
        let article = article.read();
        let author = author.read();
        views.push(ArticleView::new(
            &article,
            tag_list,
            favorited.contains(&article.id),
            counts.get(&article.id).copied().unwrap_or(0),
            ProfileView::new(&author, following.contains(&author.id)),
            body,
        ));
    }
    Ok(views)
}

/// The view of one article.
pub async fn article(
    session: &mut Session,
    article: &Tracked<Article>,
    viewer: Option<i64>,
) -> orm_core::Result<Option<ArticleView>> {
    Ok(articles(session, std::slice::from_ref(article), viewer, Body::Included).await?.pop())
}

/// Views of `comments`, in order, as seen by `viewer`: authors, the
/// viewer's follows and own row, one statement each at most, in one round
/// trip.
pub async fn comments(
    session: &mut Session,
    comments: &[Tracked<Comment>],
    viewer: Option<i64>,
) -> orm_core::Result<Vec<CommentView>> {
    if comments.is_empty() {
        return Ok(Vec::new());
    }
    let author_ids: Vec<i64> = comments.iter().map(|comment| comment.read().author_id).collect();
    let (_, following, _) = session
        .load_together((
            Load::parents(comments, Comment::AUTHOR),
            loaders::followed(viewer, &author_ids),
            loaders::viewer(viewer),
        ))
        .await?;

    let mut views = Vec::with_capacity(comments.len());
    for comment in comments {
        let Some(author) = loaded_parent(session, comment, Comment::AUTHOR)? else { continue };
        let author = author.read();
        views.push(CommentView::new(&comment.read(), ProfileView::new(&author, following.contains(&author.id))));
    }
    Ok(views)
}

/// The parent of `child`, right after `load_parents` loaded the parents of
/// its page. `None` if that found none: the row was deleted after the page
/// was read (a user and, by cascade, their articles and comments), so the
/// page leaves the child out rather than failing.
fn loaded_parent<C: Entity, P: Entity>(
    session: &mut Session,
    child: &Tracked<C>,
    relation: Relation<C, P>,
) -> orm_core::Result<Option<Tracked<P>>> {
    match session.parent(child, relation) {
        Err(orm_core::Error::RelationNotLoaded { .. }) => Ok(None),
        found => found,
    }
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
