//! Host bindings generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    additional_derives: [PartialEq],
});
