//! The `#[procpool::task]` attribute.
//!
//! Use it through the [`procpool`](https://docs.rs/procpool) crate, which
//! re-exports it as `procpool::task`: the code it generates names only
//! `::procpool` paths, so a crate that uses it depends on `procpool` alone.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

use proc_macro::TokenStream;

mod args;
mod check;
mod expand;

#[doc = include_str!("task.md")]
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::task(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // Keep the fn, so the error above is the only one its callers see.
        Err(e) => {
            let error = e.to_compile_error();
            quote::quote!(#error #item).into()
        }
    }
}
