//! Batch loading of related rows: one statement per relation for a whole
//! page of articles or comments, whatever its size, instead of one per row.
//!
//! Each helper stands for one relationship, so it can be replaced by the
//! ORM's relationship loading when that exists. They go through the
//! session's identity map where they can: a user or a follow the request
//! already loaded costs no SQL.

use std::collections::{HashMap, HashSet};

use orm_core::{tokio_postgres, Session, Tracked};

use crate::entities::{ArticleTag, Favorite, Follow, User};

/// The distinct values of `ids`, in first-seen order.
pub fn distinct(ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut seen = HashSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// Users by id (authors of articles or comments): one statement for the
/// ids not yet in the identity map, none if all are.
pub async fn users(session: &mut Session, ids: &[i64]) -> orm_core::Result<HashMap<i64, User>> {
    let users = session.get_many::<User>(ids).await?;
    Ok(users.iter().map(Tracked::get).map(|user| (user.id, user)).collect())
}

/// The tags of each article, in alphabetical order: one statement.
pub async fn tags(session: &mut Session, article_ids: &[i64]) -> orm_core::Result<HashMap<i64, Vec<String>>> {
    let rows = session
        .query::<ArticleTag>()
        .filter(ArticleTag::ARTICLE_ID.is_in(article_ids.iter().copied()))
        .order_by(ArticleTag::TAG.asc())
        .untracked()
        .all()
        .await?;
    let mut tags: HashMap<i64, Vec<String>> = HashMap::new();
    for row in rows {
        tags.entry(row.article_id).or_default().push(row.tag);
    }
    Ok(tags)
}

/// How many users favorited each article: one statement. Counted by the
/// database, as an article may have any number of favorites.
pub async fn favorite_counts(session: &mut Session, article_ids: &[i64]) -> orm_core::Result<HashMap<i64, i64>> {
    let ids = article_ids.to_vec();
    let rows = session
        .query_rows(
            "SELECT article_id, count(*) FROM favorites WHERE article_id = ANY($1) GROUP BY article_id",
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|error| orm_core::Error::Decode { entity: "favorite count", column: "count", source: error })
}

/// Which of the articles `viewer` favorited: one statement, none without a
/// viewer.
pub async fn favorited(
    session: &mut Session,
    viewer: Option<i64>,
    article_ids: &[i64],
) -> orm_core::Result<HashSet<i64>> {
    let Some(viewer) = viewer else { return Ok(HashSet::new()) };
    let keys: Vec<(i64, i64)> = article_ids.iter().map(|&article| (viewer, article)).collect();
    let found = session.get_many::<Favorite>(&keys).await?;
    Ok(found.iter().map(|favorite| favorite.read().article_id).collect())
}

/// Which of the users `viewer` follows: one statement for the follows not
/// yet in the identity map (none in a feed, which loaded them all), none
/// without a viewer.
pub async fn followed(session: &mut Session, viewer: Option<i64>, user_ids: &[i64]) -> orm_core::Result<HashSet<i64>> {
    let Some(viewer) = viewer else { return Ok(HashSet::new()) };
    let keys: Vec<(i64, i64)> = user_ids.iter().map(|&user| (viewer, user)).collect();
    let found = session.get_many::<Follow>(&keys).await?;
    Ok(found.iter().map(|follow| follow.read().followee_id).collect())
}
