//! Eager loading named on the query: the related entities to load with a
//! query's results, as a typed tree of loaders (SQLAlchemy's `selectinload`).
//!
//! Each node of the tree is one relation, loaded for every entity of its
//! level with one statement (`WHERE fk = ANY($1)` through
//! [`Session::load_children`], or the parents' keys through
//! [`Session::load_parents`]), so a tree of N relations costs N statements
//! after the root query, whatever the number of rows. The nodes are boxed
//! and type-erased, since each level has its own entity type; the tree is
//! built by closures that see the typed [`Eager`] of their level.

use futures_util::future::BoxFuture;

use crate::entity::Entity;
use crate::error::Result;
use crate::query::{query_shape, Query};
use crate::relation::Relation;
use crate::session::Session;
use crate::tracked::Tracked;

/// The relations to load with entities of type `E`: built inside the
/// closure of [`Query::with_children_nested`] or
/// [`Query::with_parent_nested`], for the entities of that level.
///
/// ```
/// # use orm_core::{Database, Entity};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # #[orm(table = "users")]
/// # pub struct User { #[orm(primary_key, generated)] pub id: i64, pub name: String }
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # pub struct Post { #[orm(primary_key, generated)] pub id: i64, #[orm(references = User)] pub author_id: i64, pub title: String }
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # pub struct Comment { #[orm(primary_key, generated)] pub id: i64, #[orm(references = Post)] pub post_id: i64, #[orm(references = User)] pub commenter_id: i64 }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
/// #     CREATE TABLE comment (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES post, commenter_id bigint NOT NULL REFERENCES users);
/// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
/// #     INSERT INTO post (author_id, title) VALUES (1, 'tea'), (1, 'jam');
/// #     INSERT INTO comment (post_id, commenter_id) VALUES (1, 2), (2, 2), (2, 1)").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// // Ann, her posts, their comments, and who wrote each comment.
/// let ann = session
///     .query::<User>()
///     .filter(User::NAME.eq("ann"))
///     .with_children_nested(Post::AUTHOR, |posts| {
///         posts.with_children_nested(Comment::POST, |comments| comments.with_parent(Comment::COMMENTER))
///     })
///     .one()
///     .await?;
/// assert_eq!(session.stats().statements, 4); // users, posts, comments, commenters
///
/// let mut commenters = Vec::new();
/// for post in session.children(&ann, Post::AUTHOR)? {
///     for comment in session.children(&post, Comment::POST)? {
///         let commenter = session.parent(&comment, Comment::COMMENTER)?.expect("NOT NULL");
///         commenters.push(commenter.read().name.clone());
///     }
/// }
/// commenters.sort();
/// assert_eq!(commenters, ["ann", "bob", "bob"]);
/// assert_eq!(session.stats().statements, 4); // reading sent nothing
/// # Ok(()) }
/// ```
#[must_use = "an eager-loading plan does nothing unless returned from the closure that built it"]
pub struct Eager<E: Entity> {
    loaders: Vec<Box<dyn Loader<E>>>,
}

/// One node of the tree: loads one relation for all entities of a level,
/// then the nodes below it for what it loaded.
trait Loader<E: Entity>: Send + Sync {
    fn run<'a>(&'a self, session: &'a mut Session, entities: &'a [Tracked<E>]) -> BoxFuture<'a, Result<()>>;
}

/// Loads the children of the level's entities (which are `P`s).
struct Children<C: Entity, P: Entity> {
    relation: Relation<C, P>,
    nested: Eager<C>,
}

impl<C: Entity, P: Entity> Loader<P> for Children<C, P> {
    fn run<'a>(&'a self, session: &'a mut Session, parents: &'a [Tracked<P>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // The last level's children are read through the session, so
            // its load keeps no handles.
            if self.nested.loaders.is_empty() {
                return session.load_children_unkept(parents, self.relation).await;
            }
            let children = session.load_children(parents, self.relation).await?;
            self.nested.run(session, &children).await
        })
    }
}

/// Loads the parents of the level's entities (which are `C`s).
struct Parents<C: Entity, P: Entity> {
    relation: Relation<C, P>,
    nested: Eager<P>,
}

impl<C: Entity, P: Entity> Loader<C> for Parents<C, P> {
    fn run<'a>(&'a self, session: &'a mut Session, children: &'a [Tracked<C>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let parents = session.load_parents(children, self.relation).await?;
            self.nested.run(session, &parents).await
        })
    }
}

impl<E: Entity> Eager<E> {
    fn new() -> Self {
        Eager { loaders: Vec::new() }
    }

    /// Loads the children of this level's entities through `relation`:
    /// one statement for all of them.
    pub fn with_children<C: Entity>(self, relation: Relation<C, E>) -> Self {
        self.with_children_nested(relation, |children| children)
    }

    /// [`with_children`](Self::with_children), then what `nested` names
    /// for the children.
    pub fn with_children_nested<C: Entity>(
        mut self,
        relation: Relation<C, E>,
        nested: impl FnOnce(Eager<C>) -> Eager<C>,
    ) -> Self {
        self.loaders.push(Box::new(Children { relation, nested: nested(Eager::new()) }));
        self
    }

    /// Loads the parents of this level's entities through `relation`: one
    /// statement for those the session does not track yet, none if it
    /// tracks them all.
    pub fn with_parent<P: Entity>(self, relation: Relation<E, P>) -> Self {
        self.with_parent_nested(relation, |parents| parents)
    }

    /// [`with_parent`](Self::with_parent), then what `nested` names for the
    /// parents.
    pub fn with_parent_nested<P: Entity>(
        mut self,
        relation: Relation<E, P>,
        nested: impl FnOnce(Eager<P>) -> Eager<P>,
    ) -> Self {
        self.loaders.push(Box::new(Parents { relation, nested: nested(Eager::new()) }));
        self
    }

    /// Loads a many-to-many relation through the join entity `J`: the join
    /// rows pointing at this level's entities (through `to_this`), then
    /// the entities they point at on the other side (through `to_other`).
    /// Two statements; read the result with [`Session::related`].
    pub fn through<J: Entity, T: Entity>(self, to_this: Relation<J, E>, to_other: Relation<J, T>) -> Self {
        self.with_children_nested(to_this, |links| links.with_parent(to_other))
    }

    /// Runs every loader for `entities`, depth first: each loader is one
    /// statement for its whole level, so the order only decides which
    /// statement goes first. Nothing is sent for no entities.
    async fn run(&self, session: &mut Session, entities: &[Tracked<E>]) -> Result<()> {
        if entities.is_empty() {
            return Ok(());
        }
        for loader in &self.loaders {
            loader.run(session, entities).await?;
        }
        Ok(())
    }
}

/// A query with relations to load eagerly with its results, made by
/// [`Query::with_children`], [`Query::with_parent`], [`Query::through`]
/// and their nested forms. After the query, each relation named is loaded
/// for all the results with one statement, and the collections read
/// without SQL through [`Session::children`], [`Session::parent`] and
/// [`Session::related`].
#[must_use = "a query does nothing until it is run with all(), first(), one() or optional()"]
pub struct EagerQuery<'s, E: Entity> {
    query: Query<'s, E>,
    eager: Eager<E>,
}

impl<E: Entity> EagerQuery<'_, E> {
    /// Also loads the children of the results through `relation`, as
    /// [`Query::with_children`] does.
    pub fn with_children<C: Entity>(mut self, relation: Relation<C, E>) -> Self {
        self.eager = self.eager.with_children(relation);
        self
    }

    /// Also loads the children through `relation`, and what `nested` names
    /// for them, as [`Query::with_children_nested`] does.
    pub fn with_children_nested<C: Entity>(
        mut self,
        relation: Relation<C, E>,
        nested: impl FnOnce(Eager<C>) -> Eager<C>,
    ) -> Self {
        self.eager = self.eager.with_children_nested(relation, nested);
        self
    }

    /// Also loads the parents of the results through `relation`, as
    /// [`Query::with_parent`] does.
    pub fn with_parent<P: Entity>(mut self, relation: Relation<E, P>) -> Self {
        self.eager = self.eager.with_parent(relation);
        self
    }

    /// Also loads the parents through `relation`, and what `nested` names
    /// for them, as [`Query::with_parent_nested`] does.
    pub fn with_parent_nested<P: Entity>(
        mut self,
        relation: Relation<E, P>,
        nested: impl FnOnce(Eager<P>) -> Eager<P>,
    ) -> Self {
        self.eager = self.eager.with_parent_nested(relation, nested);
        self
    }

    /// Also loads a many-to-many relation through a join entity, as
    /// [`Query::through`] does.
    pub fn through<J: Entity, T: Entity>(mut self, to_this: Relation<J, E>, to_other: Relation<J, T>) -> Self {
        self.eager = self.eager.through(to_this, to_other);
        self
    }

    query_shape!(E);

    /// Runs the query, then loads the relations for all its results.
    pub async fn all(mut self) -> Result<Vec<Tracked<E>>> {
        let found = self.query.reborrow().all().await?;
        self.eager.run(self.query.session, &found).await?;
        Ok(found)
    }

    /// Runs the query with `LIMIT 1`, then loads the relations for the
    /// entity found, if any.
    pub async fn first(mut self) -> Result<Option<Tracked<E>>> {
        let found = self.query.reborrow().first().await?;
        self.eager.run(self.query.session, found.as_slice()).await?;
        Ok(found)
    }

    /// Runs the query as [`Query::one`] does, then loads the relations for
    /// its only entity.
    pub async fn one(mut self) -> Result<Tracked<E>> {
        let found = self.query.reborrow().one().await?;
        self.eager.run(self.query.session, std::slice::from_ref(&found)).await?;
        Ok(found)
    }

    /// Runs the query as [`Query::optional`] does, then loads the relations
    /// for its entity, if any.
    pub async fn optional(mut self) -> Result<Option<Tracked<E>>> {
        let found = self.query.reborrow().optional().await?;
        self.eager.run(self.query.session, found.as_slice()).await?;
        Ok(found)
    }
}

impl<'s, E: Entity> Query<'s, E> {
    /// Loads, after the query, the children of its results through
    /// `relation` (posts of the users found, through `Post::AUTHOR`), with
    /// one statement for all of them, as
    /// [`Session::load_children`] does; [`Session::children`] then reads
    /// each collection without SQL.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "users")]
    /// # pub struct User { #[orm(primary_key, generated)] pub id: i64, pub name: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # pub struct Post { #[orm(primary_key, generated)] pub id: i64, #[orm(references = User)] pub author_id: i64, pub title: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob'), ('cat');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'tea'), (1, 'jam'), (2, 'bread')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let users = session.query::<User>().order_by(User::ID.asc()).with_children(Post::AUTHOR).all().await?;
    /// assert_eq!(session.stats().statements, 2); // the users, then all their posts
    ///
    /// let counts: Vec<usize> =
    ///     users.iter().map(|user| session.children(user, Post::AUTHOR).map(|posts| posts.len())).collect::<Result<_, _>>()?;
    /// assert_eq!(counts, [2, 1, 0]);
    /// assert_eq!(session.stats().statements, 2);
    /// # Ok(()) }
    /// ```
    pub fn with_children<C: Entity>(self, relation: Relation<C, E>) -> EagerQuery<'s, E> {
        EagerQuery { query: self, eager: Eager::new() }.with_children(relation)
    }

    /// [`with_children`](Self::with_children), then the relations `nested`
    /// names for the children, and so on down: users, their posts and the
    /// posts' comments are three statements.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "users")]
    /// # pub struct User { #[orm(primary_key, generated)] pub id: i64, pub name: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # pub struct Post { #[orm(primary_key, generated)] pub id: i64, #[orm(references = User)] pub author_id: i64, pub title: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # pub struct Comment { #[orm(primary_key, generated)] pub id: i64, #[orm(references = Post)] pub post_id: i64, pub body: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
    /// #     CREATE TABLE comment (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES post, body text NOT NULL);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'tea'), (1, 'jam'), (2, 'bread');
    /// #     INSERT INTO comment (post_id, body) VALUES (1, 'yes'), (1, 'no'), (3, 'maybe')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let users = session
    ///     .query::<User>()
    ///     .with_children_nested(Post::AUTHOR, |posts| posts.with_children(Comment::POST))
    ///     .all()
    ///     .await?;
    /// assert_eq!(session.stats().statements, 3);
    ///
    /// let mut comments_per_user = Vec::new();
    /// for user in &users {
    ///     let mut comments = 0;
    ///     for post in session.children(user, Post::AUTHOR)? {
    ///         comments += session.children(&post, Comment::POST)?.len();
    ///     }
    ///     comments_per_user.push((user.read().name.clone(), comments));
    /// }
    /// comments_per_user.sort();
    /// assert_eq!(comments_per_user, [("ann".to_owned(), 2), ("bob".to_owned(), 1)]);
    /// assert_eq!(session.stats().statements, 3);
    /// # Ok(()) }
    /// ```
    pub fn with_children_nested<C: Entity>(
        self,
        relation: Relation<C, E>,
        nested: impl FnOnce(Eager<C>) -> Eager<C>,
    ) -> EagerQuery<'s, E> {
        EagerQuery { query: self, eager: Eager::new() }.with_children_nested(relation, nested)
    }

    /// Loads, after the query, the parents of its results through
    /// `relation` (the authors of the posts found, through `Post::AUTHOR`),
    /// with one statement for those the session does not track yet, as
    /// [`Session::load_parents`] does; [`Session::parent`] then reads each
    /// without SQL.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "users")]
    /// # pub struct User { #[orm(primary_key, generated)] pub id: i64, pub name: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # pub struct Post { #[orm(primary_key, generated)] pub id: i64, #[orm(references = User)] pub author_id: i64, pub title: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'tea'), (2, 'jam'), (1, 'bread')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let posts = session.query::<Post>().order_by(Post::ID.asc()).with_parent(Post::AUTHOR).all().await?;
    /// assert_eq!(session.stats().statements, 2); // the posts, then their two authors
    ///
    /// let author = session.parent(&posts[1], Post::AUTHOR)?.expect("author_id is NOT NULL");
    /// assert_eq!(author.read().name, "bob");
    /// assert_eq!(session.stats().statements, 2);
    /// # Ok(()) }
    /// ```
    pub fn with_parent<P: Entity>(self, relation: Relation<E, P>) -> EagerQuery<'s, E> {
        EagerQuery { query: self, eager: Eager::new() }.with_parent(relation)
    }

    /// [`with_parent`](Self::with_parent), then the relations `nested`
    /// names for the parents.
    pub fn with_parent_nested<P: Entity>(
        self,
        relation: Relation<E, P>,
        nested: impl FnOnce(Eager<P>) -> Eager<P>,
    ) -> EagerQuery<'s, E> {
        EagerQuery { query: self, eager: Eager::new() }.with_parent_nested(relation, nested)
    }

    /// Loads, after the query, a many-to-many relation through the join
    /// entity `J`: the join rows pointing at the results (through
    /// `to_this`), then the entities on the other side (through
    /// `to_other`), two statements whatever the number of rows. It is
    /// `with_children_nested(to_this, |links| links.with_parent(to_other))`;
    /// [`Session::related`] reads the other side without SQL.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// pub struct Article {
    ///     #[orm(primary_key, generated)]
    ///     pub id: i64,
    ///     pub title: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// pub struct Tag {
    ///     #[orm(primary_key)]
    ///     pub name: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// pub struct ArticleTag {
    ///     #[orm(primary_key, references = Article)]
    ///     pub article_id: i64,
    ///     #[orm(primary_key, references = Tag, relation = "tag")]
    ///     pub tag_name: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE article (id bigserial PRIMARY KEY, title text NOT NULL);
    /// #     CREATE TABLE tag (name text PRIMARY KEY);
    /// #     CREATE TABLE article_tag (article_id bigint REFERENCES article, tag_name text REFERENCES tag, PRIMARY KEY (article_id, tag_name));
    /// #     INSERT INTO article (title) VALUES ('tea'), ('jam');
    /// #     INSERT INTO tag VALUES ('food'), ('drink'), ('sweet');
    /// #     INSERT INTO article_tag VALUES (1, 'drink'), (1, 'food'), (2, 'food'), (2, 'sweet')").await?;
    /// # let db = Database::connect(test_db.url())?;
    ///
    /// let mut session = db.session();
    /// let articles = session
    ///     .query::<Article>()
    ///     .order_by(Article::ID.asc())
    ///     .through(ArticleTag::ARTICLE, ArticleTag::TAG)
    ///     .all()
    ///     .await?;
    /// assert_eq!(session.stats().statements, 3); // articles, article_tag rows, tags
    ///
    /// let mut tags: Vec<String> = session
    ///     .related(&articles[1], ArticleTag::ARTICLE, ArticleTag::TAG)?
    ///     .iter()
    ///     .map(|tag| tag.read().name.clone())
    ///     .collect();
    /// tags.sort();
    /// assert_eq!(tags, ["food", "sweet"]);
    /// assert_eq!(session.stats().statements, 3);
    /// # Ok(()) }
    /// ```
    pub fn through<J: Entity, T: Entity>(self, to_this: Relation<J, E>, to_other: Relation<J, T>) -> EagerQuery<'s, E> {
        EagerQuery { query: self, eager: Eager::new() }.through(to_this, to_other)
    }
}

impl Session {
    /// The entities on the other side of a many-to-many relation through
    /// the join entity `J`, without SQL: for each join row pointing at
    /// `entity` through `to_this`, the entity it points at through
    /// `to_other` (join rows with a NULL there are skipped). The join rows
    /// and the other side must be loaded, by [`Query::through`] or by
    /// [`load_children`](Self::load_children) then
    /// [`load_parents`](Self::load_parents); otherwise it is
    /// [`Error::RelationNotLoaded`](crate::Error::RelationNotLoaded).
    /// The order is that of the join rows, which is no particular order.
    pub fn related<J: Entity, A: Entity, B: Entity>(
        &mut self,
        entity: &Tracked<A>,
        to_this: Relation<J, A>,
        to_other: Relation<J, B>,
    ) -> Result<Vec<Tracked<B>>> {
        let links = self.children(entity, to_this)?;
        let mut related = Vec::with_capacity(links.len());
        for link in &links {
            if let Some(other) = self.parent(link, to_other)? {
                related.push(other);
            }
        }
        Ok(related)
    }
}
