;; The smallest useful plugin: its one tool, `echo`, returns its JSON
;; arguments unchanged. Imports nothing. Used by the benchmarks.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  ;; A bump allocator: each call runs in a fresh instance, so nothing is freed.
  (func (export "zm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $ptr))
  ;; The result is the arguments: (args_ptr << 32) | args_len.
  (func (export "zm_call") (param $tool i32) (param $tool_len i32) (param $args i32) (param $args_len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $args)) (i64.const 32)) (i64.extend_i32_u (local.get $args_len)))))
