//! Host bindings generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    additional_derives: [PartialEq],
    // A state write past the stage's quota traps the call.
    imports: { "weir:plugin/state": trappable },
});
