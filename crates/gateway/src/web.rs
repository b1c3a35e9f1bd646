//! The browser editor's static files (placeholder; owned by the web work).

use warp::Filter;
use warp::filters::BoxedFilter;

/// Routes serving the editor: `GET /`, `GET /d/<doc-id>` and the bundle's assets.
pub fn routes() -> BoxedFilter<(Box<dyn warp::Reply>,)> {
    warp::get()
        .and(warp::path::end())
        .map(|| Box::new(warp::reply::html("Tandem: editor not built yet")) as Box<dyn warp::Reply>)
        .boxed()
}
