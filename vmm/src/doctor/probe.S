/*
 * The `detvm doctor` probe guest. probe.bin next to this file is its flat binary,
 * loaded and entered at 0x100000 in long mode; regenerate it with:
 *   as --64 -o probe.o probe.S && ld -N -Ttext=0x100000 -e _start -o probe.elf probe.o \
 *     && objcopy -O binary probe.elf probe.bin
 * (a unit test checks that the committed binary matches this source).
 *
 * It prints one line per fact, in this order, then powers off:
 *   cpuid <leaf> <eax> <ebx> <ecx> <edx>   for leaves 0, 1, 7 and 0x40000000 (hex)
 *   exits: start / exits: end              5000 port writes in between
 *   loop: start / loop: end                100000 kernel-mode loop iterations between
 *   tsc <hex>                              RDMSR IA32_TSC (the VMM routes it to virtual time)
 *   cpuid-user <leaf> <eax> ...            leaves 0 and 1 as ring 3 saw them
 *   syscall: cpl=<n>                       the CPL at LSTAR after SYSCALL from ring 3
 * or "exception <vector> <rip> <error code>" if something faults.
 */
        .set    EXIT_LOOPS, 5000
        .set    KERNEL_LOOPS, 100000
        .set    KSTACK, 0x80000
        .set    USTACK, 0x70000
        .set    PML4, 0x9000            /* the VMM's boot page tables (vmm::layout) */
        .set    PDPT, 0xa000
        .set    PD, 0xb000

        .code64
        .text
        .globl _start
_start:
        mov     $KSTACK, %rsp
        call    idt_setup
        lidt    idtr(%rip)
        lea     msg_start(%rip), %rsi
        call    puts

        xor     %edi, %edi
        call    print_cpuid
        mov     $1, %edi
        call    print_cpuid
        mov     $7, %edi
        call    print_cpuid
        mov     $0x40000000, %edi
        call    print_cpuid

        lea     msg_exits_start(%rip), %rsi
        call    puts
        mov     $EXIT_LOOPS, %ecx
1:      out     %al, $0x80
        dec     %ecx
        jnz     1b
        lea     msg_exits_end(%rip), %rsi
        call    puts

        lea     msg_loop_start(%rip), %rsi
        call    puts
        mov     $KERNEL_LOOPS, %ecx
2:      dec     %ecx
        jnz     2b
        lea     msg_loop_end(%rip), %rsi
        call    puts

        mov     $0x10, %ecx
        rdmsr
        shl     $32, %rdx
        or      %rax, %rdx
        mov     %rdx, %rbx
        lea     msg_tsc(%rip), %rsi
        call    puts
        mov     %rbx, %rax
        shr     $32, %rax
        call    puthex
        mov     %ebx, %eax
        call    puthex
        lea     msg_nl(%rip), %rsi
        call    puts

/* --- SYSCALL from ring 3: our GDT and TSS, user-accessible pages, STAR/LSTAR/EFER. */
        lea     tss(%rip), %rax
        movq    $KSTACK, 4(%rax)        /* RSP0 for exceptions taken in ring 3 */
        lea     gdt_tss(%rip), %rdx
        mov     %ax, 2(%rdx)            /* base 15:0 */
        shr     $16, %rax
        mov     %al, 4(%rdx)            /* base 23:16 */
        mov     %ah, 7(%rdx)            /* base 31:24 */
        shr     $16, %rax
        mov     %eax, 8(%rdx)           /* base 63:32 */
        lgdt    gdtr(%rip)
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x30, %ax
        ltr     %ax
        orq     $4, PML4
        orq     $4, PDPT
        orq     $4, PD
        mov     %cr3, %rax
        mov     %rax, %cr3
        mov     $0xc0000081, %ecx       /* STAR: kernel CS 0x08, user base 0x18 */
        xor     %eax, %eax
        mov     $0x00180008, %edx
        wrmsr
        mov     $0xc0000082, %ecx       /* LSTAR */
        lea     syscall_entry(%rip), %rax
        mov     %rax, %rdx
        shr     $32, %rdx
        wrmsr
        mov     $0xc0000084, %ecx       /* SFMASK: clear IF only */
        mov     $0x200, %eax
        xor     %edx, %edx
        wrmsr
        mov     $0xc0000080, %ecx       /* EFER.SCE */
        rdmsr
        or      $1, %eax
        wrmsr
        push    $0x23                   /* SS: user data, RPL 3 */
        push    $USTACK
        push    $0x3002                 /* RFLAGS: IOPL 3, so ring 3 may print */
        push    $0x2b                   /* CS: user 64-bit code, RPL 3 */
        lea     user_entry(%rip), %rax
        push    %rax
        iretq
/* Ring 3 cannot print (PVM keeps user-mode IOPL at 0), so user mode and the SYSCALL
 * target only record what they see, then INT 0x40 (a DPL 3 gate) reports in ring 0. */
user_entry:
        lea     user_cpuid(%rip), %rsi
        xor     %edi, %edi
1:      mov     %edi, %eax
        xor     %ecx, %ecx
        cpuid
        mov     %eax, (%rsi)
        mov     %ebx, 4(%rsi)
        mov     %ecx, 8(%rsi)
        mov     %edx, 12(%rsi)
        add     $16, %rsi
        inc     %edi
        cmp     $2, %edi
        jb      1b
        syscall
        jmp     user_entry

syscall_entry:
        mov     %cs, %eax
        mov     %eax, syscall_cs(%rip)
        int     $0x40

report_isr:
        call    report
        jmp     poweroff

/* Prints what ring 3 and the SYSCALL target recorded, if SYSCALL happened. */
report:
        cmpl    $0, syscall_cs(%rip)
        je      2f
        xor     %r13d, %r13d            /* leaf */
1:      lea     msg_cpuid_user(%rip), %rsi
        call    puts
        mov     %r13d, %eax
        call    puthex
        xor     %edi, %edi
3:      mov     $' ', %al
        call    putc
        lea     user_cpuid(%rip), %rsi
        mov     %r13d, %eax
        shl     $2, %eax
        add     %edi, %eax
        mov     (%rsi,%rax,4), %eax
        call    puthex
        inc     %edi
        cmp     $4, %edi
        jb      3b
        lea     msg_nl(%rip), %rsi
        call    puts
        inc     %r13d
        cmp     $2, %r13d
        jb      1b
        lea     msg_syscall(%rip), %rsi
        call    puts
        mov     syscall_cs(%rip), %eax
        and     $3, %al
        add     $'0', %al
        call    putc
        lea     msg_nl(%rip), %rsi
        call    puts
2:      ret

poweroff:
        mov     $0x3400, %ax            /* SLP_TYP=5 (S5) | SLP_EN */
        mov     $0x604, %dx
        out     %ax, %dx
3:      hlt
        jmp     3b

/* print_cpuid(leaf %edi): "cpuid <leaf> <eax> <ebx> <ecx> <edx>\n". */
print_cpuid:
        push    %rbx
        mov     %edi, %eax
        xor     %ecx, %ecx
        cpuid
        push    %rdx
        push    %rcx
        push    %rbx
        push    %rax
        lea     msg_cpuid(%rip), %rsi
        call    puts
        mov     %edi, %eax
        call    puthex
        mov     $4, %r9d
1:      mov     $' ', %al
        call    putc
        pop     %rax
        call    puthex
        dec     %r9d
        jnz     1b
        lea     msg_nl(%rip), %rsi
        call    puts
        pop     %rbx
        ret

/* Exceptions: print the vector and power off. */
        .balign 8
exc_stubs:
        .set    vec, 0
        .rept   32
        .balign 8
        push    $vec
        jmp     exc_common
        .set    vec, vec + 1
        .endr
/* "exception <vector> <rip> <error code>": vectors 8, 10-14, 17, 21, 29, 30 push one. */
exc_common:
        pop     %rbx
        xor     %r12d, %r12d
        mov     $0x60227d00, %eax
        bt      %ebx, %eax
        jnc     1f
        pop     %r12
1:      call    report
        lea     msg_exc(%rip), %rsi
        call    puts
        mov     %ebx, %eax
        call    puthex
        mov     $' ', %al
        call    putc
        mov     (%rsp), %eax
        call    puthex
        mov     $' ', %al
        call    putc
        mov     %r12d, %eax
        call    puthex
        lea     msg_nl(%rip), %rsi
        call    puts
        jmp     poweroff

idt_setup:
        xor     %edi, %edi
1:      lea     exc_stubs(%rip), %rsi
        lea     (%rsi,%rdi,8), %rsi
        mov     %edi, %eax
        shl     $4, %eax
        lea     idt(%rip), %rdx
        add     %rax, %rdx
        mov     %si, (%rdx)
        movw    $0x08, 2(%rdx)
        movw    $0x8e00, 4(%rdx)
        mov     %rsi, %rax
        shr     $16, %rax
        mov     %ax, 6(%rdx)
        shr     $16, %rax
        mov     %eax, 8(%rdx)
        movl    $0, 12(%rdx)
        inc     %edi
        cmp     $32, %edi
        jb      1b
        lea     idt + 0x40 * 16(%rip), %rdx
        lea     report_isr(%rip), %rax
        mov     %ax, (%rdx)
        movw    $0x08, 2(%rdx)
        movw    $0xee00, 4(%rdx)        /* DPL 3: INT 0x40 works from ring 3 */
        shr     $16, %rax
        mov     %ax, 6(%rdx)
        shr     $16, %rax
        mov     %eax, 8(%rdx)
        movl    $0, 12(%rdx)
        ret

/* putc(%al), polling LSR.THRE. Clobbers %dx. */
putc:
        push    %rax
1:      mov     $0x3fd, %dx
        in      %dx, %al
        test    $0x20, %al
        jz      1b
        pop     %rax
        mov     $0x3f8, %dx
        out     %al, %dx
        ret

/* puts(%rsi): a NUL-terminated string. */
puts:
        lodsb
        test    %al, %al
        jz      1f
        call    putc
        jmp     puts
1:      ret

/* puthex(%eax): 8 hex digits. */
puthex:
        mov     %eax, %r8d
        mov     $8, %r10d
1:      rol     $4, %r8d
        mov     %r8d, %eax
        and     $0xf, %eax
        lea     hexdigits(%rip), %rsi
        mov     (%rsi,%rax), %al
        call    putc
        dec     %r10d
        jnz     1b
        ret

        .data
hexdigits:      .ascii "0123456789abcdef"
msg_start:      .asciz "probe: start\n"
msg_cpuid:      .asciz "cpuid "
msg_exits_start: .asciz "exits: start\n"
msg_exits_end:  .asciz "exits: end\n"
msg_loop_start: .asciz "loop: start\n"
msg_loop_end:   .asciz "loop: end\n"
msg_tsc:        .asciz "tsc "
msg_syscall:    .asciz "syscall: cpl="
msg_cpuid_user: .asciz "cpuid-user "
msg_exc:        .asciz "exception "
msg_nl:         .asciz "\n"
        .balign 8
gdt:    .quad   0
        .quad   0x00af9b000000ffff      /* 0x08 kernel code, 64-bit */
        .quad   0x00cf93000000ffff      /* 0x10 kernel data */
        .quad   0x00cffb000000ffff      /* 0x18 user code, 32-bit (SYSRET base) */
        .quad   0x00cff3000000ffff      /* 0x20 user data */
        .quad   0x00affb000000ffff      /* 0x28 user code, 64-bit */
gdt_tss:
        .quad   0x0000890000000067      /* 0x30 available 64-bit TSS, base filled in */
        .quad   0
gdt_end:
        .balign 8
gdtr:   .word   gdt_end - gdt - 1
        .quad   gdt
        .balign 16
idtr:   .word   0x41 * 16 - 1
        .quad   idt
        .balign 4
user_cpuid:     .fill 32, 1, 0
syscall_cs:     .long 0
        .balign 16
tss:    .fill   104, 1, 0
        .balign 16
idt:    .fill   0x41 * 16, 1, 0
