//! What a page of articles or comments needs besides its relations, loaded
//! for the whole page with one statement each, whatever its size.
//!
//! The relations themselves (authors, tags) are the ORM's batch loading
//! (`Session::load_parents`, `Session::load_children`; see `views`). What is
//! left here is what relation loading does not cover: how many users
//! favorited each article, and which of the page's articles and authors the
//! viewer favorited and follows, which are single rows looked up by their
//! composite keys rather than whole collections. The counts are an
//! aggregate of the query builder.

use std::collections::{HashMap, HashSet};

use orm_core::{Expr, Session};

use crate::entities::{Favorite, Follow};

/// How many users favorited each article: one statement
/// (`SELECT article_id, count(*) ... GROUP BY article_id`), whose text does
/// not depend on the page (the ids are one array parameter).
pub async fn favorite_counts(session: &mut Session, article_ids: &[i64]) -> orm_core::Result<HashMap<i64, i64>> {
    let counts = session
        .query::<Favorite>()
        .select((Favorite::ARTICLE_ID, Expr::count_all()))
        .filter(Favorite::ARTICLE_ID.is_in(article_ids))
        .group_by(Favorite::ARTICLE_ID)
        .all()
        .await?;
    Ok(counts.into_iter().collect())
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
