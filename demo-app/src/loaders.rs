//! What a page of articles or comments loads, as [`Load`]s that handlers
//! send together, in one round trip, whatever the size of the page.
//!
//! An article's page is one statement: the articles, their authors (a
//! join) and what the view shows of each ([`Facts`]: favorite counts, the
//! viewer's favorites and follows, tags), selected as correlated
//! subqueries of the page ([`with_facts`]), and a list's total with it
//! ([`page_with_total`]). What is here besides: the
//! viewer's follows of a few users (a comment's authors), single rows
//! looked up by their composite keys rather than whole collections, and
//! the viewer's own row, which the session middleware checks, as the
//! author of what they write ([`own_profile`]).

use orm_core::{Condition, Expr, Join, JoinWith, Load, Selection, Session, Tracked};

use crate::entities::{Article, ArticleTag, Favorite, Follow, User};
use crate::id_hash::IdSet;
use crate::views::ProfileView;

/// The article with this slug, as a list of at most one (empty: the
/// handler's 404), to load beside what the handler needs with it.
pub fn article_by_slug(session: &mut Session, slug: &str) -> Load<Vec<Tracked<Article>>> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).limit(1).all_later()
}

/// What a view of an article shows besides the article and its author,
/// selected beside each row of the page ([`with_facts`]): how many users
/// favorited it, whether the viewer did, whether the viewer follows its
/// author, and its tags in alphabetical order.
pub type Facts = (i64, bool, bool, Vec<String>);

/// An article, its author and its [`Facts`], as a page's statement returns
/// them: plain values, untracked (a page only shows them).
pub type ArticleRow = (Article, User, Facts);

/// The expressions that select an article's [`Facts`].
type FactExprs = (Expr<Article, i64>, Expr<Article, bool>, Expr<Article, bool>, Expr<Article, Vec<String>>);

/// The expressions of an article's [`Facts`] as seen by `viewer`:
/// correlated subqueries (`Relation::count`, `Relation::any`,
/// `Relation::collect`) to select in the statement that loads the
/// articles, instead of a statement each after it. Without a viewer,
/// nothing is favorited or followed.
fn facts(viewer: Option<i64>) -> FactExprs {
    let (favorited, following) = match viewer {
        Some(viewer) => (Favorite::ARTICLE.any(Favorite::USER_ID.eq(viewer)), Article::AUTHOR.has(followed_by(viewer))),
        None => (Condition::any([]), Condition::any([])),
    };
    (
        Favorite::ARTICLE.count(),
        favorited.into_expr(),
        following.into_expr(),
        ArticleTag::ARTICLE.collect(ArticleTag::TAG, ArticleTag::TAG.asc()),
    )
}

/// The users `viewer` follows.
fn followed_by(viewer: i64) -> Condition<User> {
    Follow::FOLLOWEE.any(Follow::FOLLOWER_ID.eq(viewer))
}

/// `join` (articles with their authors) with each article's [`Facts`] as
/// seen by `viewer`, in the join's own statement.
pub fn with_facts(
    join: Join<'_, Article, User, User>,
    viewer: Option<i64>,
) -> JoinWith<'_, Article, User, User, impl Selection<Article, Output = Facts> + Send + 'static> {
    join.with(facts(viewer))
}

/// A list page as [`page_with_total`] loads it.
pub struct ListPage {
    /// The articles, their authors and their [`Facts`].
    pub rows: Vec<ArticleRow>,
    /// How many articles match the list's condition; `None` when the page
    /// has no rows to carry it.
    pub total: Option<i64>,
    /// Whether the viewer's row exists: false without a viewer, and when
    /// the page has no rows to say so.
    pub viewer_found: bool,
}

/// A page of articles (`join`, with their authors) with their [`Facts`]
/// as seen by `viewer`, how many articles match `matching` (the page's
/// total) and whether the viewer's row exists (the session middleware's
/// check, see `db_session`), all from the page's one statement: the
/// counts are uncorrelated (`Condition::count_rows`), which PostgreSQL
/// runs once for the statement. Each comes with every row, so a page
/// without any has neither.
pub fn page_with_total(
    join: Join<'_, Article, User, User>,
    viewer: Option<i64>,
    matching: Condition<Article>,
) -> Load<ListPage> {
    let (count, favorited, following, tags) = facts(viewer);
    // No viewer: a condition that holds for no row, which the server
    // answers without reading the table.
    let viewer_rows = viewer.map_or_else(|| Condition::any([]), |viewer| User::ID.eq(viewer)).count_rows();
    let selection = (count, favorited, following, tags, matching.count_rows(), viewer_rows);
    join.with(selection).all_later().map(|rows| {
        let (total, viewer_found) = rows.first().map_or((None, false), |(_, _, facts)| (Some(facts.4), facts.5 > 0));
        let rows = rows
            .into_iter()
            .map(|(article, author, (count, favorited, following, tags, _, _))| {
                (article, author, (count, favorited, following, tags))
            })
            .collect();
        ListPage { rows, total, viewer_found }
    })
}

/// The article with this slug, its author and its [`Facts`] as `viewer`
/// sees them, as a list of at most one (empty: the handler's 404), from
/// one statement, to load beside what the handler needs with it.
pub fn article_row_by_slug(session: &mut Session, slug: &str, viewer: Option<i64>) -> Load<Vec<ArticleRow>> {
    with_facts(by_slug_with_author(session, slug), viewer).all_later()
}

/// The article with this slug (at most one) joined to its author,
/// untracked: what a single article's view selects its facts beside.
pub fn by_slug_with_author<'s>(session: &'s mut Session, slug: &str) -> Join<'s, Article, User, User> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).limit(1).untracked().join(Article::AUTHOR)
}

/// [`article_row_by_slug`] by the article's id: an article's view after a
/// handler changed it (the load flushes the change first).
pub fn article_row_by_id(session: &mut Session, id: i64, viewer: Option<i64>) -> Load<Vec<ArticleRow>> {
    let join = session.query::<Article>().filter(Article::ID.eq(id)).untracked().join(Article::AUTHOR);
    with_facts(join, viewer).all_later()
}

/// The viewer as the author of what they write (one may follow oneself),
/// from their own row, untracked, and the ids of the articles with this
/// slug (at most one: the article a new comment belongs to), in one
/// statement; `None` if the viewer's row is gone. Without a slug, the
/// article's part is a condition that holds for no row, which reads
/// nothing.
pub async fn own_profile(
    session: &mut Session,
    viewer: i64,
    slug: Option<&str>,
) -> orm_core::Result<Option<(ProfileView, Vec<i64>)>> {
    let article = slug.map_or_else(|| Condition::any([]), |slug| Article::SLUG.eq(slug));
    let mut rows = session
        .query::<User>()
        .filter(User::ID.eq(viewer))
        .untracked()
        .with((followed_by(viewer).into_expr(), article.collect_rows(Article::ID, Article::ID.asc())))
        .all()
        .await?;
    Ok(rows.pop().map(|(user, (following, articles))| (ProfileView { user, following }, articles)))
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
