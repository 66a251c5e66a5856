// A handler of `.on` that returns a value: the error points to `.rpc`.
use signalbox::{Ctx, Error, Router};

signalbox::opaque_message!(Ping = "PING");

fn main() {
    let _ = Router::new().on(|ctx: Ctx<Ping>| async move { Ok::<_, Error>(ctx.into_payload()) });
}
