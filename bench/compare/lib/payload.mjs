/** The instance every system stores: the same JSON bytes everywhere (about 80 bytes). */
export const payload = (a, b, seq) => `{"address":"10.1.${a % 250}.${(b % 250) + 1}","port":8080,"tags":["bench"],"metadata":{"seq":"${seq}"}}`;
