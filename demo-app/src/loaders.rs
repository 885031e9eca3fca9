//! What a page of articles or comments needs besides its relations, loaded
//! for the whole page with one statement each, whatever its size.
//!
//! The relations themselves (authors, tags) are the ORM's batch loading
//! (`Session::load_parents`, `Session::load_children`; see `views`). What is
//! left here is what relation loading does not cover: how many users
//! favorited each article, and which of the page's articles and authors the
//! viewer favorited and follows, which are single rows looked up by their
//! composite keys rather than whole collections.

use std::collections::{HashMap, HashSet};

use orm_core::{tokio_postgres, RawSql, Session};

use crate::entities::{Favorite, Follow};

/// How many users favorited each article: one statement. Raw SQL, because
/// the count needs `GROUP BY`, which the query builder cannot say; loading
/// the favorites to count them would read one row per favorite, without
/// bound. Its text is fixed, and it runs on every list page: it stays
/// prepared on the connection.
pub async fn favorite_counts(session: &mut Session, article_ids: &[i64]) -> orm_core::Result<HashMap<i64, i64>> {
    let ids = article_ids.to_vec();
    let rows = session
        .query_rows(
            RawSql::cached("SELECT article_id, count(*) FROM favorites WHERE article_id = ANY($1) GROUP BY article_id"),
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|error| orm_core::Error::Decode { entity: "favorite count", column: "count", source: error })
}

/// Which of the articles `viewer` favorited: one statement for the keys not
/// yet in the identity map (none right after favoriting), none without a
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
