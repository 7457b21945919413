//! Generated log streams for tests and the cost example: JSON log lines
//! from a handful of templates, with the ids, latencies, timestamps and
//! addresses that make real streams noisy, and an optional change of
//! template (Java stack traces) from a given event on.

use crate::metrics::Rng;

pub struct LogStream {
    rng: Rng,
    /// Events from this index on use the changed templates.
    pub change_at: Option<usize>,
}

impl LogStream {
    pub fn new(seed: u64, change_at: Option<usize>) -> Self {
        LogStream {
            rng: Rng::new(seed),
            change_at,
        }
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.below(16) as u32, 16).unwrap_or('0'))
            .collect()
    }

    fn n(&mut self, below: usize) -> usize {
        self.rng.below(below)
    }

    /// Event `i` of the stream.
    pub fn event(&mut self, i: usize) -> String {
        let ts = format!(
            "2025-12-11T{:02}:{:02}:{:02}.{:03}Z",
            10 + i / 3600,
            (i / 60) % 60,
            i % 60,
            self.n(1000)
        );
        let trace = self.hex(32);
        if self.change_at.is_some_and(|c| i >= c) {
            let (class, message) = match self.n(3) {
                0 => (
                    "OrderService",
                    r#"java.lang.NullPointerException: Cannot invoke \"com.shop.Order.getItems()\" because \"order\" is null"#,
                ),
                1 => (
                    "OrderRepository",
                    "java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms",
                ),
                _ => (
                    "InventoryClient",
                    "java.lang.IllegalStateException: inventory reservation failed",
                ),
            };
            let (line, caller, thread) = (self.n(400) + 20, self.n(200) + 10, self.n(200));
            return format!(
                r#"{{"timestamp":"{ts}","level":"ERROR","logger":"com.shop.{class}","message":"{message}","stack_trace":"at com.shop.{class}.process({class}.java:{line})\n\tat com.shop.CheckoutController.checkout(CheckoutController.java:{caller})\n\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:897)","thread":"http-nio-8080-exec-{thread}","trace_id":"{trace}"}}"#
            );
        }
        match self.n(10) {
            0..=3 => {
                let (id, ms) = (self.n(1000), self.n(300));
                format!(
                    r#"{{"timestamp":"{ts}","level":"INFO","message":"GET /api/orders/{id} 200 in {ms}ms","service":"api-gateway","trace_id":"{trace}"}}"#
                )
            }
            4 | 5 => {
                let (id, ms) = (self.n(1000), self.n(300));
                let user = format!(
                    "{}-{}-4{}-a{}-{}",
                    self.hex(8),
                    self.hex(4),
                    self.hex(3),
                    self.hex(3),
                    self.hex(12)
                );
                format!(
                    r#"{{"timestamp":"{ts}","level":"INFO","message":"POST /api/cart/{id} 201 in {ms}ms","service":"api-gateway","trace_id":"{trace}","user_id":"{user}","token":"eyJ{}"}}"#,
                    self.hex(20)
                )
            }
            6 | 7 => {
                let id = self.n(1000);
                format!(
                    r#"{{"timestamp":"{ts}","level":"DEBUG","message":"cache hit for product {id}","service":"catalog","trace_id":"{trace}"}}"#
                )
            }
            8 => {
                let ms = 1000 + self.n(4000);
                format!(
                    r#"{{"timestamp":"{ts}","level":"WARN","message":"slow query on orders took {ms}ms","service":"orders-db","trace_id":"{trace}"}}"#
                )
            }
            _ => {
                let (user, a, b) = (self.n(100_000), self.n(256), self.n(256));
                format!(
                    r#"{{"timestamp":"{ts}","level":"INFO","message":"user u{user}@example.com logged in from 10.0.{a}.{b}","service":"auth","trace_id":"{trace}"}}"#
                )
            }
        }
    }
}
