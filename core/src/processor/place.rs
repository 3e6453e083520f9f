//! Where an event happened and came from: its page URL parsed (`page::parse_page_url`) and
//! the visit's origin (`referrer::attribute`), which depend on the URL and the referrer
//! alone. Parsing and classifying cost microseconds, and most events repeat a (URL,
//! referrer) pair an earlier event had (a page's internal links, one campaign's landing
//! page), so the result is memoised per thread. Both functions are pure, so the memo never
//! changes an answer; it is cleared when full, to bound its memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use super::page::{parse_page_url, PageUrl};
use super::referrer::{self, Attribution, Signals};

/// The parsed page and the origin of one (URL, referrer) pair.
#[derive(Debug)]
pub(super) struct Place {
    pub page: PageUrl,
    pub origin: Attribution,
}

/// Pairs remembered per thread (about 1 KB each at most for typical URLs).
const ENTRIES: usize = 8192;

/// A memo entry: the pair itself (a hash can collide) and what it gives.
type Entry = (Box<str>, Box<str>, Rc<Place>);

thread_local! {
    static MEMO: RefCell<HashMap<u64, Entry>> = RefCell::new(HashMap::new());
}

fn compute(url: &str, referrer: &str) -> Place {
    let page = parse_page_url(url);
    let origin = referrer::attribute(&Signals {
        page_host: &page.hostname,
        referrer,
        utm_source: &page.utm_source,
        utm_medium: &page.utm_medium,
        utm_campaign: &page.utm_campaign,
        params: &page.param_names,
    });
    Place { page, origin }
}

fn key(url: &str, referrer: &str) -> u64 {
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    h.write(url.as_bytes());
    // A separator no UTF-8 text holds, so ("ab", "c") and ("a", "bc") hash apart.
    h.write_u8(0xff);
    h.write(referrer.as_bytes());
    h.finish()
}

/// The place of (`url`, `referrer`), from the memo when this thread saw the pair before.
pub(super) fn of(url: &str, referrer: &str) -> Rc<Place> {
    let key = key(url, referrer);
    MEMO.with(|memo| {
        if let Some((u, r, place)) = memo.borrow().get(&key) {
            if **u == *url && **r == *referrer {
                return place.clone();
            }
        }
        let place = Rc::new(compute(url, referrer));
        let mut memo = memo.borrow_mut();
        if memo.len() >= ENTRIES {
            memo.clear();
        }
        memo.insert(key, (url.into(), referrer.into(), place.clone()));
        place
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_what_computing_answers() {
        let pairs = [
            ("https://shop.example/p?utm_source=news", "https://www.google.com/"),
            ("https://shop.example/p?utm_source=news", ""),
            ("https://shop.example/p", "https://www.google.com/"),
            // Shifting a character from one to the other is another pair.
            ("https://shop.example/pa", "b"),
            ("https://shop.example/p", "ab"),
        ];
        for _ in 0..2 {
            for (url, referrer) in pairs {
                let (memo, fresh) = (of(url, referrer), compute(url, referrer));
                assert_eq!(memo.page, fresh.page, "{url} {referrer}");
                assert_eq!(memo.origin, fresh.origin, "{url} {referrer}");
            }
        }
    }

    #[test]
    fn a_full_memo_starts_again() {
        for i in 0..ENTRIES + 10 {
            of(&format!("https://shop.example/{i}"), "");
        }
        assert!(MEMO.with(|m| m.borrow().len()) <= ENTRIES);
        assert_eq!(of("https://shop.example/3", "").page.pathname, "/3");
    }
}
