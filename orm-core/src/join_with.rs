//! [`JoinWith`]: a [`Join`] that also selects expressions of the child
//! beside each joined row, in the same statement: a page of articles with
//! their authors and, per article, its favorite count, whether the viewer
//! favorited it and its tags ([`Relation::count`](crate::Relation::count),
//! [`Condition::into_expr`](crate::Condition::into_expr),
//! [`Relation::collect`](crate::Relation::collect)), where loading those
//! after the page costs a statement each.

use crate::entity::Entity;
use crate::error::Result;
use crate::expr::ExprNode;
use crate::join::Join;
use crate::load_together::{prepared, Load, Prepare};
use crate::select::{decode_rows, Selection};
use crate::tracked::Tracked;

/// A [`Join`] with expressions of the child selected beside each row, made
/// by [`Join::with`]. Rows come back as triples: the child, its parent (as
/// the join returns them: tracked or plain, `Option` for a left join) and
/// the selection's values, decoded as [`Query::select`](crate::Query::select)
/// decodes them.
#[must_use = "a join does nothing until it is run with all()"]
pub struct JoinWith<'s, C: Entity, P: Entity, Parent, S> {
    join: Join<'s, C, P, Parent>,
    selection: S,
}

impl<'s, C: Entity, P: Entity, Parent> Join<'s, C, P, Parent> {
    /// Selects `selection` (an expression of the child, or a tuple of up to
    /// eight) beside each row, in the join's own statement: the join's
    /// filters, order and limit, set before, still apply. What a page shows
    /// of each row's children (how many there are, whether the viewer is
    /// among them, a few of their values) then comes with the page instead
    /// of from a statement of its own after it.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// #[orm(table = "users")]
    /// struct User {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     name: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Post {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     #[orm(references = User)]
    ///     author_id: i64,
    ///     title: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Like {
    ///     #[orm(primary_key, references = Post)]
    ///     post_id: i64,
    ///     #[orm(primary_key, references = User)]
    ///     user_id: i64,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
    /// #     CREATE TABLE \"like\" (post_id bigint REFERENCES post, user_id bigint REFERENCES users, PRIMARY KEY (post_id, user_id));
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'hello'), (2, 'hi');
    /// #     INSERT INTO \"like\" VALUES (1, 1), (1, 2), (2, 1)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let viewer = 2;
    /// let mut session = db.session();
    /// let page = session
    ///     .query::<Post>()
    ///     .order_by(Post::ID.asc())
    ///     .untracked()
    ///     .join(Post::AUTHOR)
    ///     .with((Like::POST.count(), Like::POST.any(Like::USER_ID.eq(viewer)).into_expr()))
    ///     .all()
    ///     .await?;
    /// let (post, author, (likes, liked_by_viewer)) = &page[0];
    /// assert_eq!((post.title.as_str(), author.name.as_str(), *likes, *liked_by_viewer), ("hello", "ann", 2, true));
    /// assert_eq!(page[1].2, (1, false));
    /// assert_eq!(session.stats().statements, 1);
    /// # Ok(()) }
    /// ```
    pub fn with<S: Selection<C>>(self, selection: S) -> JoinWith<'s, C, P, Parent, S> {
        JoinWith { join: self, selection }
    }
}

impl<'s, C: Entity, P: Entity, Parent, S: Selection<C>> JoinWith<'s, C, P, Parent, S> {
    /// The join, the selection's expressions, and the selection, to decode
    /// them with.
    fn parts(self) -> (Join<'s, C, P, Parent>, Vec<ExprNode>, S) {
        let extras = self.selection.list().0;
        (self.join, extras, self.selection)
    }
}

/// Where a row's selected values start: after the child's columns, the
/// flag saying whether a parent was joined, and the parent's columns.
fn extras_at<C: Entity, P: Entity>() -> usize {
    C::META.columns.len() + 1 + P::META.columns.len()
}

/// The rows of an inner join with their values. Every row has its parent
/// (the statement's inner join leaves out the others), so each pairs with
/// its own values.
fn inner<T, U, X>(rows: Vec<(T, Option<U>)>, extras: Vec<X>) -> Vec<(T, U, X)> {
    rows.into_iter().zip(extras).filter_map(|((child, parent), extra)| Some((child, parent?, extra))).collect()
}

fn left<T, U, X>(rows: Vec<(T, Option<U>)>, extras: Vec<X>) -> Vec<(T, Option<U>, X)> {
    rows.into_iter().zip(extras).map(|((child, parent), extra)| (child, parent, extra)).collect()
}

macro_rules! join_with_runs {
    ($parent:ty, $row:ty, $decode:path, $pair:ident) => {
        impl<C: Entity, P: Entity, S: Selection<C>> JoinWith<'_, C, P, $parent, S> {
            /// Runs the join and returns each row with its selected values.
            pub async fn all(self) -> Result<Vec<$row>> {
                let (join, extras, selection) = self.parts();
                join.fetch(&extras, async move |session, rows| {
                    // The values first: a value that fails to decode
                    // leaves the identity map as it was.
                    let values = decode_rows(&selection, rows, extras_at::<C, P>()).await?;
                    let joined = $decode(session, rows).await?;
                    Ok($pair(joined, values))
                })
                .await
            }

            /// [`all`](Self::all) as a [`Load`], to send in one round trip
            /// with others by [`Session::load_together`](crate::Session::load_together).
            pub fn all_later(self) -> Load<Vec<$row>>
            where
                S: Send + Sync + 'static,
                S::Output: Send + 'static,
            {
                let (join, extras, selection) = self.parts();
                let prepare: Prepare = Box::new(move |session, rows| {
                    Box::pin(async move {
                        let values = decode_rows(&selection, &rows, extras_at::<C, P>()).await?;
                        let joined = $decode(session, &rows).await?;
                        Ok(prepared($pair(joined, values)))
                    })
                });
                join.later(&extras, prepare, |_, made: Vec<$row>| Ok(made))
            }
        }
    };
}

join_with_runs!(Tracked<P>, (Tracked<C>, Tracked<P>, S::Output), crate::join::track_joined::<C, P>, inner);
join_with_runs!(
    Option<Tracked<P>>,
    (Tracked<C>, Option<Tracked<P>>, S::Output),
    crate::join::track_joined::<C, P>,
    left
);
join_with_runs!(P, (C, P, S::Output), crate::join::plain_joined::<C, P>, inner);
join_with_runs!(Option<P>, (C, Option<P>, S::Output), crate::join::plain_joined::<C, P>, left);
