#pragma once
// Names that many tasks share (plugin, version, handler, tenant), stored once: a task holds an
// 8-byte handle instead of a 32-byte string (docs/performance.md, memory per queued task).
// Reference counted: NameTable::sweep frees the names no handle refers to any more, so a client
// submitting ever new names cannot grow the table beyond what live tasks use.
// Not thread safe: one table per TaskStore, used on the broker's loop thread only, and every
// handle must be dropped before its table (the store owns both).
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace kbfleet::broker {

class SharedName {
 public:
  SharedName() = default;  // ""
  SharedName(const SharedName& o) : e_(o.e_) { retain(); }
  SharedName(SharedName&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  SharedName& operator=(SharedName o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  ~SharedName() { release(); }

  const std::string& str() const { return e_ ? e_->text : empty_string(); }
  operator std::string_view() const { return str(); }  // reads like the string it names
  std::string_view view() const { return str(); }
  bool empty() const { return e_ == nullptr; }
  friend bool operator==(const SharedName& a, std::string_view b) { return a.view() == b; }

 private:
  friend class NameTable;
  struct Entry {
    std::string text;
    std::size_t refs = 0;
  };
  explicit SharedName(Entry* e) : e_(e) { retain(); }
  void retain() {
    if (e_) ++e_->refs;
  }
  void release() {
    if (e_) --e_->refs;
  }
  static const std::string& empty_string();
  Entry* e_ = nullptr;
};

class NameTable {
 public:
  // The handle of `name` (the empty handle for ""), adding it if new.
  SharedName get(std::string_view name);
  // Frees names without handles. Cheap to call often: it scans only once the table has doubled
  // since the last scan, so the cost is amortised O(1) per name added.
  void sweep();
  std::size_t size() const { return entries_.size(); }

 private:
  std::unordered_map<std::string_view, std::unique_ptr<SharedName::Entry>> entries_;  // keys view entry text
  std::size_t size_after_sweep_ = 0;
};

}  // namespace kbfleet::broker
