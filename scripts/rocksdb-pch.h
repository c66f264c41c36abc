// The headers that most of RocksDB's bundled sources include, precompiled
// once per build by scripts/clang++ (which see). Only ever force-included
// into RocksDB's own files; every name here is one they include themselves.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "db/db_impl/db_impl.h"
