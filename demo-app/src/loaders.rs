//! What a page of articles or comments needs besides its relations, as
//! [`Load`]s that the views run together with the relation loads, in one
//! round trip, whatever the size of the page.
//!
//! The relations themselves (authors, tags) are the ORM's relation loads
//! (`Load::parents`, `Load::children`; see `views`). What is left here is
//! what relation loading does not cover: how many users favorited each
//! article, and which of the page's articles and authors the viewer
//! favorited and follows, which are single rows looked up by their
//! composite keys rather than whole collections. The counts are an
//! aggregate of the query builder.

use orm_core::{Expr, Load, Session, Tracked};

use crate::entities::{Article, Favorite, Follow, User};
use crate::id_hash::{IdMap, IdSet};

/// The article with this slug, as a list of at most one (empty: the
/// handler's 404), to load beside what the handler needs with it.
pub fn article_by_slug(session: &mut Session, slug: &str) -> Load<Vec<Tracked<Article>>> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).limit(1).all_later()
}

/// How many users favorited each article: one statement
/// (`SELECT article_id, count(*) ... GROUP BY article_id`), whose text does
/// not depend on the page (the ids are one array parameter).
pub fn favorite_counts(session: &mut Session, article_ids: &[i64]) -> Load<IdMap<i64>> {
    session
        .query::<Favorite>()
        .select((Favorite::ARTICLE_ID, Expr::count_all()))
        .filter(Favorite::ARTICLE_ID.is_in(article_ids.iter().copied()))
        .group_by(Favorite::ARTICLE_ID)
        .all_later()
        .map(|counts| counts.into_iter().collect())
}

/// Which of the articles `viewer` favorited: one statement for the keys not
/// yet in the identity map (none right after favoriting), none without a
/// viewer.
pub fn favorited(viewer: Option<i64>, article_ids: &[i64]) -> Load<IdSet> {
    let keys: Vec<(i64, i64)> =
        viewer.map_or_else(Vec::new, |viewer| article_ids.iter().map(|&article| (viewer, article)).collect());
    Load::<Vec<Tracked<Favorite>>>::get_many(&keys)
        .map(|found| found.iter().map(|favorite| favorite.read().article_id).collect())
}

/// Which of the users `viewer` follows: one statement for the follows not
/// yet in the identity map (none in a feed, which loaded them all), none
/// without a viewer.
pub fn followed(viewer: Option<i64>, user_ids: &[i64]) -> Load<IdSet> {
    let keys: Vec<(i64, i64)> =
        viewer.map_or_else(Vec::new, |viewer| user_ids.iter().map(|&user| (viewer, user)).collect());
    Load::<Vec<Tracked<Follow>>>::get_many(&keys)
        .map(|found| found.iter().map(|follow| follow.read().followee_id).collect())
}

/// The viewer's own row, which the session middleware looks up after the
/// handler to check that the token's user still exists (see `db_session`):
/// loaded beside the page's other loads, the check finds it in the identity
/// map instead of costing a round trip of its own. Nothing without a viewer.
pub fn viewer(viewer: Option<i64>) -> Load<Vec<Tracked<User>>> {
    Load::get_many(&viewer.into_iter().collect::<Vec<_>>())
}
