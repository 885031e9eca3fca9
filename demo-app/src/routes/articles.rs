//! Articles, the feed and favorites: `/api/articles...`.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use orm_core::{Condition, Load, OnConflict, Session, Tracked};
use serde::Deserialize;

use crate::auth::{AuthUser, MaybeAuthUser};
use crate::entities::{now, Article, ArticleTag, Favorite, Follow, User};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::json::{limit, require, require_patch, Patch, Valid, Validate};
use crate::json_writer::{write_list, JsonView, WriteJson};
use crate::loaders;
use crate::loaders::{ArticleRow, ListPage};
use crate::state::AppState;
use crate::views::{self, ArticleView, Body};
use orm_core::axum::DbSession;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/articles", get(list).post(create))
        .route("/api/articles/feed", get(feed))
        .route("/api/articles/{slug}", get(show).put(update).delete(remove))
        .route("/api/articles/{slug}/favorite", post(favorite).delete(unfavorite))
}

/// The largest page a list returns, whatever `limit` asks for.
pub const MAX_PAGE: i64 = 100;

/// Tags are indexed: 64 characters is plenty, and at most 256 bytes of
/// UTF-8, far below the index's limit.
pub const TAG_MAX: usize = 64;

/// `{"article": ...}`.
struct ArticleResponse {
    article: ArticleView,
}

impl WriteJson for ArticleResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"article\":");
        self.article.write_json(out);
        out.push(b'}');
    }
}

/// `{"articles": [...], "articlesCount": ...}`.
struct ArticlesResponse {
    articles: Vec<ArticleView>,
    /// All matching articles, not only this page.
    articles_count: i64,
}

impl WriteJson for ArticlesResponse {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"articles\":");
        write_list(out, &self.articles);
        out.extend_from_slice(b",\"articlesCount\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.articles_count).as_bytes());
        out.push(b'}');
    }
}

/// The article with this slug, or 404.
pub async fn find_article(session: &mut Session, slug: &str) -> ApiResult<Tracked<Article>> {
    session.query::<Article>().filter(Article::SLUG.eq(slug)).first().await?.ok_or(ApiError::NotFound("article"))
}

/// The view of article `article_id` as the response to `viewer`, who
/// changed it: one round trip, after the flush of the change.
async fn respond(session: &mut Session, article_id: i64, viewer: i64) -> ApiResult<JsonView<ArticleResponse>> {
    let row = loaders::article_row_by_id(session, article_id, Some(viewer));
    let (mut row, _) = session.load_together((row, loaders::viewer(Some(viewer)))).await?;
    // None only if the article or its author vanished meanwhile.
    let row = row.pop().ok_or(ApiError::NotFound("article"))?;
    Ok(JsonView(ArticleResponse { article: views::article(row, Body::Included) }))
}

// ---- lists ----

#[derive(Deserialize, Default)]
struct ListParams {
    tag: Option<String>,
    author: Option<String>,
    favorited: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// A page of a list: newest first.
#[derive(Clone, Copy)]
struct Page {
    limit: i64,
    offset: i64,
}

impl ListParams {
    fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(20);
        let offset = self.offset.unwrap_or(0);
        if limit < 1 {
            return Err(ApiError::invalid("limit", "must be at least 1"));
        }
        if offset < 0 {
            return Err(ApiError::invalid("offset", "must be at least 0"));
        }
        Ok(Page { limit: limit.min(MAX_PAGE), offset })
    }

    /// The condition the parameters set: tagged `tag`, written by `author`
    /// and favorited by `favorited`, each if given; `None` if none is.
    /// Each is a semi-join across relations (`EXISTS`), so an article
    /// matches once however many rows it matches through.
    fn filter(&self) -> Option<Condition<Article>> {
        let tagged = self.tag.as_ref().map(|tag| ArticleTag::ARTICLE.any(ArticleTag::TAG.eq(tag)));
        let by = self.author.as_ref().map(|name| Article::AUTHOR.has(User::USERNAME.eq(name)));
        let favorited_by =
            self.favorited.as_ref().map(|name| Favorite::ARTICLE.any(Favorite::USER.has(User::USERNAME.eq(name))));
        [tagged, by, favorited_by].into_iter().flatten().reduce(Condition::and)
    }
}

/// One page of the articles matching `filter` with their authors (a join,
/// untracked: the page only shows them), what `viewer` sees of each, how
/// many match and whether the viewer's row exists
/// ([`loaders::page_with_total`]): one statement, built by the ORM's query
/// builder.
fn newest_page(
    session: &mut Session,
    filter: &impl Fn() -> Option<Condition<Article>>,
    page: &Page,
    viewer: Option<i64>,
) -> Load<ListPage> {
    let mut query = session.query::<Article>();
    if let Some(condition) = filter() {
        query = query.filter(condition);
    }
    let join = query
        .order_by(Article::CREATED_AT.desc())
        .order_by(Article::ID.desc())
        .limit(page.limit)
        .offset(page.offset)
        .untracked()
        .join(Article::AUTHOR);
    loaders::page_with_total(join, viewer, filter().unwrap_or_else(|| Condition::all([])))
}

/// The list's answer from its page. The total came with the rows; a page
/// without any has none, so a page past the end counts apart (a first
/// page without rows has nothing to count). A viewer the page found needs
/// no lookup after the handler; one it could not (no rows) gets it.
async fn answer_page(
    session: &mut Session,
    filter: &impl Fn() -> Option<Condition<Article>>,
    page: &Page,
    viewer: &MaybeAuthUser,
    ListPage { rows, total, viewer_found }: ListPage,
) -> ApiResult<JsonView<ArticlesResponse>> {
    if viewer_found {
        viewer.found_in_database();
    }
    let articles_count = match total {
        Some(total) => total,
        None if page.offset == 0 => 0,
        None => {
            let mut count = session.query::<Article>();
            if let Some(condition) = filter() {
                count = count.filter(condition);
            }
            count.count().await?
        }
    };
    Ok(JsonView(ArticlesResponse { articles: views::articles(rows, Body::Omitted), articles_count }))
}

/// `GET /api/articles?tag=&author=&favorited=&limit=&offset=`: newest first;
/// `articlesCount` is the number of all matching articles. One statement:
/// the page with all it shows, its total and the viewer's row (which the
/// session middleware checks).
async fn list(
    viewer: MaybeAuthUser,
    mut db: DbSession,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonView<ArticlesResponse>> {
    let page = params.page()?;
    let filter = || params.filter();
    let found = newest_page(&mut db, &filter, &page, viewer.id());
    let (found,) = db.load_together((found,)).await?;
    answer_page(&mut db, &filter, &page, &viewer, found).await
}

/// `GET /api/articles/feed`: articles by the users the viewer follows. One
/// statement: the page with all it shows (its authors selected through the
/// follows, in the database), its total and the viewer's row.
async fn feed(
    auth: AuthUser,
    mut db: DbSession,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonView<ArticlesResponse>> {
    let page = params.page()?;
    let id = auth.id;
    let followed_by_viewer = || Some(Article::AUTHOR.has(Follow::FOLLOWEE.any(Follow::FOLLOWER_ID.eq(id))));
    let found = newest_page(&mut db, &followed_by_viewer, &page, Some(id));
    let (found,) = db.load_together((found,)).await?;
    answer_page(&mut db, &followed_by_viewer, &page, &MaybeAuthUser(Some(auth)), found).await
}

// ---- one article ----

/// `GET /api/articles/{slug}`: the article with its author, all it shows
/// and whether the viewer's row exists, as a page of one
/// ([`loaders::page_with_total`], with nothing to total): one statement,
/// untracked. A slug that matches nothing is a 404 whatever the viewer.
async fn show(
    viewer: MaybeAuthUser,
    mut db: DbSession,
    Path(slug): Path<String>,
) -> ApiResult<JsonView<ArticleResponse>> {
    let join = loaders::by_slug_with_author(&mut db, &slug);
    let found = loaders::page_with_total(join, viewer.id(), Condition::any([]));
    let (ListPage { mut rows, viewer_found, .. },) = db.load_together((found,)).await?;
    if viewer_found {
        viewer.found_in_database();
    }
    let row = rows.pop().ok_or(ApiError::NotFound("article"))?;
    Ok(JsonView(ArticleResponse { article: views::article(row, Body::Included) }))
}

#[derive(Deserialize)]
struct CreateRequest {
    article: NewArticle,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewArticle {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    tag_list: Patch<Vec<String>>,
}

impl Validate for CreateRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let article = &self.article;
        let mut problems = Vec::new();
        require(&mut problems, "title", &article.title);
        require(&mut problems, "description", &article.description);
        require(&mut problems, "body", &article.body);
        check_tags(&mut problems, &article.tag_list);
        problems
    }
}

fn check_tags(problems: &mut Vec<(&'static str, String)>, tags: &Patch<Vec<String>>) {
    match tags {
        Patch::Absent => {}
        Patch::Null => problems.push(("tagList", "must be a list".to_owned())),
        // One message however many tags are too long.
        Patch::Value(tags) => {
            if let Some(tag) = tags.iter().find(|tag| tag.trim().chars().count() > TAG_MAX) {
                limit(problems, "tagList", tag, TAG_MAX);
            }
        }
    }
}

/// Trimmed, without blanks and duplicates, in alphabetical order.
fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let mut tags: Vec<String> =
        tags.into_iter().map(|tag| tag.trim().to_owned()).filter(|tag| !tag.is_empty()).collect();
    tags.sort();
    tags.dedup();
    tags
}

/// `POST /api/articles`: 201 with the article. Three round trips: what the
/// article's view shows of its author (the viewer's row, with whether they
/// follow themselves), then the article's insert (with `BEGIN`), then its
/// tags' insert with the `COMMIT`. A new
/// article has no favorites and the tags it was given, so its view needs
/// no load after the insert.
async fn create(
    auth: AuthUser,
    mut db: DbSession,
    Valid(request): Valid<CreateRequest>,
) -> ApiResult<(StatusCode, JsonView<ArticleResponse>)> {
    let (author, _) = loaders::own_profile(&mut db, auth.id, None).await?.ok_or(ApiError::InvalidToken)?;
    auth.found_in_database();
    let new = request.article;
    let time = now();
    let base = slugify(&new.title);
    let article = db.add(Article {
        id: 0,
        slug: base.clone(),
        title: new.title.trim().to_owned(),
        description: new.description,
        body: new.body,
        author_id: auth.id,
        created_at: time,
        updated_at: time,
    });
    flush_with_unique_slug(&mut db, &article, &base).await?;
    let article_id = article.read().id;
    let tags = match new.tag_list {
        Patch::Value(tags) => normalize_tags(tags),
        Patch::Absent | Patch::Null => Vec::new(),
    };
    // Inserted by the commit, in one statement, in the round trip of its
    // COMMIT.
    db.add_all(tags.iter().map(|tag| ArticleTag { article_id, tag: tag.clone() }));
    let article = article.read().clone();
    let view = ArticleView { article, tags, body: Body::Included, favorited: false, favorites_count: 0, author };
    Ok((StatusCode::CREATED, JsonView(ArticleResponse { article: view })))
}

#[derive(Deserialize)]
struct UpdateRequest {
    article: ArticleChanges,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArticleChanges {
    #[serde(default)]
    title: Patch<String>,
    #[serde(default)]
    description: Patch<String>,
    #[serde(default)]
    body: Patch<String>,
    #[serde(default)]
    tag_list: Patch<Vec<String>>,
}

impl Validate for UpdateRequest {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let changes = &self.article;
        let mut problems = Vec::new();
        require_patch(&mut problems, "title", &changes.title);
        require_patch(&mut problems, "description", &changes.description);
        require_patch(&mut problems, "body", &changes.body);
        check_tags(&mut problems, &changes.tag_list);
        problems
    }
}

/// The author's own article with this slug: 404 if none, 403 if another's.
/// The author's row comes beside it, in the same round trip, for the
/// session middleware's check that the token's user exists.
async fn own_article(session: &mut Session, slug: &str, user: i64) -> ApiResult<Tracked<Article>> {
    let found = loaders::article_by_slug(session, slug);
    let (mut found, _) = session.load_together((found, loaders::viewer(Some(user)))).await?;
    let found = found.pop().ok_or(ApiError::NotFound("article"))?;
    if found.read().author_id != user {
        return Err(ApiError::Forbidden("article"));
    }
    Ok(found)
}

/// `PUT /api/articles/{slug}`: changes the given fields; a new title gives
/// a new slug; a `tagList` replaces the tags.
async fn update(
    auth: AuthUser,
    mut db: DbSession,
    Path(slug): Path<String>,
    Valid(request): Valid<UpdateRequest>,
) -> ApiResult<JsonView<ArticleResponse>> {
    let changes = request.article;
    let article = own_article(&mut db, &slug, auth.id).await?;
    let new_slug = {
        let mut article = article.write();
        let mut new_slug = None;
        if let Patch::Value(title) = changes.title {
            let title = title.trim().to_owned();
            let base = slugify(&title);
            if title != article.title && base != slugify(&article.title) {
                article.slug.clone_from(&base);
                new_slug = Some(base);
            }
            article.title = title;
        }
        if let Patch::Value(description) = changes.description {
            article.description = description;
        }
        if let Patch::Value(body) = changes.body {
            article.body = body;
        }
        article.updated_at = now();
        new_slug
    };
    if let Some(base) = new_slug {
        flush_with_unique_slug(&mut db, &article, &base).await?;
    }
    if let Patch::Value(tags) = changes.tag_list {
        replace_tags(&mut db, &article, normalize_tags(tags)).await?;
    }
    let article_id = article.read().id;
    respond(&mut db, article_id, auth.id).await
}

/// Makes the article's tags exactly `tags`: deletes the others, adds the
/// missing ones (written by the next flush).
async fn replace_tags(session: &mut Session, article: &Tracked<Article>, tags: Vec<String>) -> orm_core::Result<()> {
    let existing = session.load_children(std::slice::from_ref(article), ArticleTag::ARTICLE).await?;
    let article_id = article.read().id;
    let mut kept = Vec::new();
    for row in &existing {
        let tag = row.read().tag.clone();
        if tags.contains(&tag) {
            kept.push(tag);
        } else {
            session.delete(row)?;
        }
    }
    session.add_all(tags.into_iter().filter(|tag| !kept.contains(tag)).map(|tag| ArticleTag { article_id, tag }));
    Ok(())
}

/// `DELETE /api/articles/{slug}`: 204; its tags, favorites and comments go
/// with it, deleted by the database (`ON DELETE CASCADE`) in the same
/// statement, without being loaded.
async fn remove(auth: AuthUser, mut db: DbSession, Path(slug): Path<String>) -> ApiResult<StatusCode> {
    let article = own_article(&mut db, &slug, auth.id).await?;
    db.delete(&article)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The article with this slug, its author and all it shows (or 404),
/// `user`'s favorite of it, if any, and `user`'s row, found together in
/// one round trip: the favorite through the article's slug, in the
/// database.
async fn article_and_favorite(
    session: &mut Session,
    slug: &str,
    user: i64,
) -> ApiResult<(ArticleRow, Option<Tracked<Favorite>>)> {
    let article = loaders::article_row_by_slug(session, slug, Some(user));
    let favorite = session
        .query::<Favorite>()
        .filter(Favorite::USER_ID.eq(user))
        .filter(Favorite::ARTICLE.has(Article::SLUG.eq(slug)))
        .all_later();
    let (mut article, mut favorite, _) =
        session.load_together((article, favorite, loaders::viewer(Some(user)))).await?;
    let article = article.pop().ok_or(ApiError::NotFound("article"))?;
    Ok((article, favorite.pop()))
}

/// `POST /api/articles/{slug}/favorite`: idempotent, also when requests
/// race. Two round trips: the article with all it shows beside the
/// viewer's favorite of it, read before the write, then the insert, which
/// the commit sends alone, its own transaction. The view counts the new
/// favorite unless that read found it there already.
async fn favorite(auth: AuthUser, mut db: DbSession, Path(slug): Path<String>) -> ApiResult<JsonView<ArticleResponse>> {
    let (article, existing) = article_and_favorite(&mut db, &slug, auth.id).await?;
    let article_id = article.0.id;
    let mut view = views::article(article, Body::Included);
    if existing.is_none() && !view.favorited {
        // A concurrent request of the same user may insert the row after
        // the read: then this insert writes nothing, and the answer, one
        // favorite of this user, is still what the database holds. (Left
        // to the commit, a plain insert's unique violation would fail it.)
        let favorite = Favorite { user_id: auth.id, article_id };
        db.add_on_conflict(favorite, OnConflict::key().do_nothing());
        view.favorited = true;
        view.favorites_count += 1;
    }
    Ok(JsonView(ArticleResponse { article: view }))
}

/// `DELETE /api/articles/{slug}/favorite`: idempotent, also when requests
/// race (deleting a row that is gone already is no error). Two round trips,
/// as a favorite: the article with all it shows beside the viewer's
/// favorite of it, then the delete with the commit; the view counts the
/// deleted favorite out.
async fn unfavorite(
    auth: AuthUser,
    mut db: DbSession,
    Path(slug): Path<String>,
) -> ApiResult<JsonView<ArticleResponse>> {
    let (article, existing) = article_and_favorite(&mut db, &slug, auth.id).await?;
    let mut view = views::article(article, Body::Included);
    if let Some(favorite) = existing {
        db.delete(&favorite)?;
        if view.favorited {
            view.favorited = false;
            view.favorites_count -= 1;
        }
    }
    Ok(JsonView(ArticleResponse { article: view }))
}

// ---- slugs ----

const SLUG_CONSTRAINT: &str = "articles_slug_unique";
const SLUG_MAX: usize = 60;

/// `"How to Train Your Dragon!"` → `"how-to-train-your-dragon"`: ASCII
/// letters and digits, words joined by `-`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for word in title.split(|c: char| !c.is_ascii_alphanumeric()).filter(|word| !word.is_empty()) {
        if slug.len() + word.len() + 1 > SLUG_MAX && !slug.is_empty() {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.extend(word.chars().take(SLUG_MAX).map(|c| c.to_ascii_lowercase()));
    }
    if slug.is_empty() {
        slug.push_str("article");
    }
    slug
}

/// Flushes the article; while its slug is taken, appends a random suffix
/// and flushes again. A failed flush leaves the session usable with the
/// work still pending, so the retry needs nothing else.
async fn flush_with_unique_slug(session: &mut Session, article: &Tracked<Article>, base: &str) -> ApiResult<()> {
    let mut attempts = 0;
    loop {
        match session.flush().await {
            Ok(()) => return Ok(()),
            Err(orm_core::Error::UniqueViolation { constraint: Some(name), .. })
                if name == SLUG_CONSTRAINT && attempts < 5 =>
            {
                attempts += 1;
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                article.write().slug = format!("{base}-{}", &suffix[..8]);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_ascii_words() {
        assert_eq!(slugify("How to Train Your Dragon!"), "how-to-train-your-dragon");
        assert_eq!(slugify("  Rust: 2024 edition -- ok? "), "rust-2024-edition-ok");
        assert_eq!(slugify("日本語"), "article");
        assert!(slugify(&"word ".repeat(50)).len() <= SLUG_MAX);
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_sorted() {
        let tags = normalize_tags(vec!["training".into(), " dragons".into(), String::new(), "dragons".into()]);
        assert_eq!(tags, ["dragons", "training"]);
    }

    #[test]
    fn pages_default_to_twenty_and_reject_nonsense() {
        let page = ListParams::default().page().unwrap();
        assert_eq!((page.limit, page.offset), (20, 0));
        let big = ListParams { limit: Some(1000), ..ListParams::default() }.page().unwrap();
        assert_eq!(big.limit, MAX_PAGE);
        assert!(ListParams { limit: Some(0), ..ListParams::default() }.page().is_err());
        assert!(ListParams { offset: Some(-1), ..ListParams::default() }.page().is_err());
    }
}
