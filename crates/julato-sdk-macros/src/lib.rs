//! Procedural macros of `julato-sdk`: [`macro@handler`], [`function!`] and
//! [`derive(Event)`](macro@Event).
//!
//! Use them through `julato_sdk`, which re-exports them and documents them with
//! examples; the code they expand to refers to `::julato_sdk`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, DeriveInput, Expr, FnArg, GenericArgument, Ident, ItemFn, LitStr, Path,
    PathArguments, Token, Type, bracketed, parse_macro_input,
};

/// Derives `julato_sdk::Event` for a type: its event type name is the type's name, or
/// the one given by `#[event(name = "...")]`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive_event_impl(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

fn derive_event_impl(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = event_name_attr(&input.attrs)?
        .unwrap_or_else(|| LitStr::new(&input.ident.unraw().to_string(), input.ident.span()));
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::julato_sdk::Event for #ident #type_generics #where_clause {
            const TYPE: &'static str = #name;
        }
    })
}

/// Reads `#[event(name = "...")]`.
fn event_name_attr(attrs: &[Attribute]) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else {
                Err(meta.error("expected `name = \"...\"`"))
            }
        })?;
    }
    Ok(name)
}

/// Marks a handler: `fn(event: E, state: S, ctx: &mut Context) -> Result<S,
/// HandlerError>` (the context parameter may be left out).
///
/// - If `E` is `Vec<u8>`, the handler receives the raw payload bytes of the event type
///   given by `#[handler(event = "...")]`, which is then required.
/// - Otherwise the payload is decoded from JSON into `E`, and the event type is
///   `E::TYPE` (see `julato_sdk::Event`) unless `event = "..."` names another.
///
/// The function is left as it is; next to it, a hidden constant
/// `__julato_handler_<name>` holds its `julato_sdk::Handler`, which `function!` finds
/// by the handler's name.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut event_type: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("event") {
            event_type = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("expected `event = \"...\"`"))
        }
    });
    parse_macro_input!(args with parser);
    let item = parse_macro_input!(item as ItemFn);
    handler_impl(event_type, item).unwrap_or_else(syn::Error::into_compile_error).into()
}

fn handler_impl(event_type: Option<LitStr>, item: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &item.sig;
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new_spanned(asyncness, "a handler cannot be async"));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&sig.generics, "a handler cannot be generic"));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(variadic, "a handler cannot be variadic"));
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(arg) => types.push(&*arg.ty),
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(receiver, "a handler cannot take self"));
            }
        }
    }
    let (event_ty, state_ty, with_context) = match types.as_slice() {
        [event, state] => (*event, *state, false),
        [event, state, _ctx] => (*event, *state, true),
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                "a handler takes (event, state) or (event, state, ctx: &mut Context)",
            ));
        }
    };

    let raw = is_byte_vec(event_ty);
    let event_type = match (event_type, raw) {
        (Some(name), _) => quote!(#name),
        (None, false) => quote!(<#event_ty as ::julato_sdk::Event>::TYPE),
        (None, true) => {
            return Err(syn::Error::new_spanned(
                event_ty,
                "a raw-bytes handler needs its event type: #[handler(event = \"...\")]",
            ));
        }
    };
    let payload = Ident::new("payload", Span::mixed_site());
    let state = Ident::new("state", Span::mixed_site());
    let ctx = Ident::new("ctx", Span::mixed_site());
    let event = Ident::new("event", Span::mixed_site());
    let decode = if raw {
        quote!(let #event = ::julato_sdk::Payload::into_bytes(#payload);)
    } else {
        quote!(let #event: #event_ty = ::julato_sdk::Payload::decode(&#payload)?;)
    };
    let name = &sig.ident;
    let call = if with_context {
        quote!(#name(#event, #state, #ctx))
    } else {
        quote!({
            let _ = #ctx;
            #name(#event, #state)
        })
    };
    let vis = &item.vis;
    let companion = companion_ident(name);
    let doc = format!("The `julato_sdk::Handler` of [`{}`].", name.unraw());
    Ok(quote! {
        #item

        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #companion: ::julato_sdk::Handler<#state_ty> = ::julato_sdk::Handler::new(
            #event_type,
            |#payload: ::julato_sdk::Payload,
             #state: #state_ty,
             #ctx: &mut ::julato_sdk::Context|
             -> ::core::result::Result<#state_ty, ::julato_sdk::HandlerError> {
                #decode
                #call
            },
        );
    })
}

/// Whether `ty` is `Vec<u8>` (or `std::vec::Vec<u8>`, ...).
fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else { return false };
    if last.ident != "Vec" {
        return false;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return false };
    matches!(
        args.args.first(),
        Some(GenericArgument::Type(Type::Path(p))) if args.args.len() == 1 && p.path.is_ident("u8")
    )
}

fn companion_ident(handler: &Ident) -> Ident {
    format_ident!("__julato_handler_{}", handler.unraw())
}

/// Declares the function: its state type, the initial state, its handlers; and
/// exports it as the component's `event-types`, `init` and `handle`.
///
/// ```text
/// julato_sdk::function! {
///     state: Type = initial_value,   // or `state: Type,` for Type::default()
///     handlers: [handler_a, module::handler_b],
/// }
/// ```
///
/// Defines `pub static FUNCTION: julato_sdk::Function<Type>` in the calling module.
#[proc_macro]
pub fn function(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as FunctionInput);
    function_impl(input).unwrap_or_else(syn::Error::into_compile_error).into()
}

struct FunctionInput {
    state: Type,
    init: Option<Expr>,
    handlers: Punctuated<Path, Token![,]>,
}

impl Parse for FunctionInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        if key != "state" {
            return Err(syn::Error::new(key.span(), "expected `state: Type = initial_value,`"));
        }
        input.parse::<Token![:]>()?;
        let state = input.parse()?;
        let init = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        input.parse::<Token![,]>()?;
        let key: Ident = input.parse()?;
        if key != "handlers" {
            return Err(syn::Error::new(key.span(), "expected `handlers: [handler, ...]`"));
        }
        input.parse::<Token![:]>()?;
        let content;
        bracketed!(content in input);
        let handlers = content.parse_terminated(Path::parse_mod_style, Token![,])?;
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error("unexpected input after `handlers: [...]`"));
        }
        Ok(Self { state, init, handlers })
    }
}

fn function_impl(input: FunctionInput) -> syn::Result<TokenStream2> {
    let FunctionInput { state, init, handlers } = input;
    let init = match init {
        Some(init) => quote!(#init),
        None => quote!(<#state as ::core::default::Default>::default()),
    };
    let companions = handlers.into_iter().map(|mut path| {
        if let Some(last) = path.segments.last_mut() {
            last.ident = companion_ident(&last.ident);
        }
        path
    });
    let bindings = quote!(::julato_sdk::bindings);
    Ok(quote! {
        /// This Julato function: its initial state and handler table. The component's
        /// exports call it; tests can too (`FUNCTION.handle(...)`).
        pub static FUNCTION: ::julato_sdk::Function<#state> = ::julato_sdk::Function::new(
            || -> #state { #init },
            &[#(#companions),*],
        );

        const _: () = {
            struct JulatoGuest;

            impl #bindings::Guest for JulatoGuest {
                fn event_types() -> ::std::vec::Vec<::std::string::String> {
                    ::julato_sdk::__private::event_types(&FUNCTION)
                }

                fn init() -> ::core::result::Result<::std::string::String, #bindings::HandlerError> {
                    ::julato_sdk::__private::init(&FUNCTION)
                }

                fn handle(
                    ctx: #bindings::Context,
                    event: #bindings::Event,
                    state: ::std::string::String,
                ) -> ::core::result::Result<#bindings::Outcome, #bindings::HandlerError> {
                    ::julato_sdk::__private::handle(&FUNCTION, ctx, event, state)
                }
            }

            #bindings::export!(JulatoGuest with_types_in #bindings);
        };
    })
}
