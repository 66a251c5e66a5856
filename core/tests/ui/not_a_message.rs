// A payload type declared without `message!`: the error says to declare it.
use signalbox::{Ctx, Router};

struct Join {
    room: String,
}

fn main() {
    let _ = Router::new().on(|ctx: Ctx<Join>| async move {
        let _ = &ctx.payload().room;
    });
}
