//! What a page of articles or comments needs besides its relations, as
//! [`Load`]s that the views run together with the relation loads, in one
//! round trip, whatever the size of the page.
//!
//! The authors come with the page, by a join. What is here: the tags of
//! the page's articles, how many users favorited each article and which of
//! them the viewer favorited (an aggregate of the query builder), and
//! which of the page's authors the viewer follows, single rows looked up
//! by their composite keys rather than whole collections.

use orm_core::{Expr, Load, Session, Tracked};

use crate::entities::{Article, ArticleTag, Favorite, Follow, User};
use crate::id_hash::{IdMap, IdSet};
use crate::views::PlainWithAuthor;

/// The article with this slug, as a list of at most one (empty: the
/// handler's 404), to load beside what the handler needs with it.
pub fn article_by_slug(session: &mut Session, slug: &str) -> Load<Vec<Tracked<Article>>> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).limit(1).all_later()
}

/// The article with this slug and its author, as a list of at most one
/// (empty: the handler's 404), from one statement (a join), as plain
/// values, to load beside what the handler needs with it.
pub fn article_with_author_by_slug(session: &mut Session, slug: &str) -> Load<Vec<PlainWithAuthor<Article>>> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).limit(1).untracked().join(Article::AUTHOR).all_later()
}

/// The tags of each of the articles, in alphabetical order: one statement,
/// whose text does not depend on the page (the ids are one array
/// parameter), of plain values.
pub fn tags(session: &mut Session, article_ids: &[i64]) -> Load<IdMap<Vec<String>>> {
    session
        .query::<ArticleTag>()
        .filter(ArticleTag::ARTICLE_ID.is_in(article_ids.iter().copied()))
        .order_by(ArticleTag::TAG.asc())
        .untracked()
        .all_later()
        .map(|rows| {
            let mut tags = IdMap::<Vec<String>>::default();
            for row in rows {
                tags.entry(row.article_id).or_default().push(row.tag);
            }
            tags
        })
}

/// How many users favorited each article, and which of them `viewer`
/// favorited: one statement (`SELECT article_id, count(*), count(*)
/// FILTER (WHERE user_id = $viewer) > 0 ... GROUP BY article_id`), whose
/// text does not depend on the page (the ids are one array parameter).
/// Without a viewer, the counts alone.
pub fn favorites(session: &mut Session, viewer: Option<i64>, article_ids: &[i64]) -> Load<(IdMap<i64>, IdSet)> {
    let query = session.query::<Favorite>().filter(Favorite::ARTICLE_ID.is_in(article_ids.iter().copied()));
    let Some(viewer) = viewer else {
        return query
            .select((Favorite::ARTICLE_ID, Expr::count_all()))
            .group_by(Favorite::ARTICLE_ID)
            .all_later()
            .map(|counts| (counts.into_iter().collect(), IdSet::default()));
    };
    let viewers = Expr::any_where(Favorite::USER_ID.eq(viewer));
    query.select((Favorite::ARTICLE_ID, Expr::count_all(), viewers)).group_by(Favorite::ARTICLE_ID).all_later().map(
        |rows| {
            let mut counts = IdMap::default();
            let mut favorited = IdSet::default();
            for (article, count, by_viewer) in rows {
                counts.insert(article, count);
                if by_viewer {
                    favorited.insert(article);
                }
            }
            (counts, favorited)
        },
    )
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
