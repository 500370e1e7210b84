/* bcryptprimitives.dll for wine 8.0, which has none: Rust's std (>= 1.78) takes its random seed
 * from ProcessPrng there, and without the DLL every Rust executable exits with code 53 at start.
 * ProcessPrng is served by RtlGenRandom (advapi32's SystemFunction036).
 *
 * x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
    if (!SystemFunction036(data, n)) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
