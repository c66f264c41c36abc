;; notes: a zeromesh plugin in WAT. Tool `swap_note` stores its arguments as
;; the calling agent's memory `notes/last` and returns what was stored there
;; before (or null). Needs capabilities memory.read and memory.write.
(module
  (import "zeromesh" "memory_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "zeromesh" "memory_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "notes/last")
  (data (i32.const 32) "null")
  (data (i32.const 48) "{\"error\": \"could not store the note\"}")
  ;; The previous note is read into [1024, 1024 + 64 KiB); inputs go above.
  (global $next (mut i32) (i32.const 66560))
  (func (export "zm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    ;; Grow when the inputs pass the end of memory.
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get $size) (i32.const 65536)) (i32.const 1))))))
    (local.get $ptr))
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "zm_call") (param $tool i32) (param $tool_len i32) (param $args i32) (param $args_len i32) (result i64)
    (local $previous i32)
    (local.set $previous (call $read (i32.const 16) (i32.const 10) (i32.const 1024) (i32.const 65536)))
    (if (i32.ne (call $write (i32.const 16) (i32.const 10) (local.get $args) (local.get $args_len)) (i32.const 0))
      (then (return (call $pack (i32.const 48) (i32.const 37)))))
    (if (result i64) (i32.lt_s (local.get $previous) (i32.const 0))
      (then (call $pack (i32.const 32) (i32.const 4)))
      (else (call $pack (i32.const 1024) (local.get $previous))))))
